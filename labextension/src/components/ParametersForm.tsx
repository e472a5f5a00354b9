import * as React from 'react';
import { ApiError, ParametersSchema } from '../api';
import { parseParameter, showParameter } from '../format';

/** Text of each parameter input, keyed by name. */
export type ParameterTexts = Record<string, string>;

export function initialTexts(schema: ParametersSchema, values: Record<string, unknown> = {}): ParameterTexts {
  const out: ParameterTexts = {};
  for (const [name, prop] of Object.entries(schema.properties ?? {})) {
    out[name] = showParameter(name in values ? values[name] : prop.default, prop.type);
  }
  return out;
}

/** Parse the texts by their schema types: the values, or the errors by parameter name. */
export function parseTexts(
  schema: ParametersSchema,
  texts: ParameterTexts
): { values: Record<string, unknown>; errors: Record<string, string> } {
  const values: Record<string, unknown> = {};
  const errors: Record<string, string> = {};
  for (const [name, prop] of Object.entries(schema.properties ?? {})) {
    const r = parseParameter(texts[name] ?? '', prop.type);
    if (r.error) {
      errors[name] = r.error;
    } else {
      values[name] = r.value;
    }
  }
  return { values, errors };
}

/** The server's errors about parameters (`body.parameters.<name>`), by parameter name. */
export function parameterErrors(e: ApiError): Record<string, string> {
  const mapped: Record<string, string> = {};
  for (const { field, problem } of e.errors ?? []) {
    const m = /parameters\.(\w+)/.exec(field);
    if (m) {
      mapped[m[1]] = problem;
    }
  }
  return mapped;
}

function typeLabel(type: string | string[] | undefined): string {
  return type === undefined ? 'any' : Array.isArray(type) ? type.join(' | ') : type;
}

/** A form generated from a flow's parameters schema (typed defaults of the %%flow cell). */
export function ParametersForm(props: {
  schema: ParametersSchema;
  texts: ParameterTexts;
  errors: Record<string, string>;
  onChange: (texts: ParameterTexts) => void;
}): JSX.Element {
  const props_ = Object.entries(props.schema.properties ?? {});
  // An error given by the parent (the server's answer) holds for the text it was about:
  // once the field is edited it is the live check's turn.
  const given = React.useRef<Record<string, { from: Record<string, string>; text: string }>>({});
  for (const [name] of props_) {
    if (props.errors[name] && given.current[name]?.from !== props.errors) {
      given.current[name] = { from: props.errors, text: props.texts[name] ?? '' };
    }
  }
  const givenError = (name: string) =>
    props.errors[name] && given.current[name]?.text === (props.texts[name] ?? '') ? props.errors[name] : undefined;
  if (!props_.length) {
    return <div className="nbflow-dim">This notebook has no parameters.</div>;
  }
  return (
    <div className="nbflow-params-form">
      {props_.map(([name, prop]) => {
        const first = Array.isArray(prop.type) ? prop.type[0] : prop.type;
        // Checked as you type (6.5 in an integer field is marked at once), then the server's.
        const error = parseParameter(props.texts[name] ?? '', prop.type).error ?? givenError(name);
        return (
          <label key={name} className="nbflow-field">
            <span className="nbflow-field-label">
              {name} <span className="nbflow-dim">({typeLabel(prop.type)})</span>
            </span>
            {first === 'boolean' ? (
              <select
                name={`param-${name}`}
                value={props.texts[name]}
                onChange={e => props.onChange({ ...props.texts, [name]: e.target.value })}
              >
                <option value="true">true</option>
                <option value="false">false</option>
              </select>
            ) : (
              <input
                className={`jp-mod-styled ${error ? 'nbflow-invalid' : ''}`}
                aria-invalid={!!error}
                name={`param-${name}`}
                type={first === 'integer' || first === 'number' ? 'number' : 'text'}
                step={first === 'number' ? 'any' : undefined}
                value={props.texts[name]}
                onChange={e => props.onChange({ ...props.texts, [name]: e.target.value })}
              />
            )}
            {error && <span className="nbflow-field-error" data-field={`param-${name}`}>{error}</span>}
          </label>
        );
      })}
    </div>
  );
}
