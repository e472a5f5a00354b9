import { LabIcon } from '@jupyterlab/ui-components';

const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
  <g class="jp-icon3" fill="#616161">
    <circle cx="5" cy="6" r="3"/>
    <circle cx="19" cy="6" r="3"/>
    <circle cx="12" cy="19" r="3"/>
    <path d="M7.2 7.9l3.6 8.2 1.8-.8-3.6-8.2zM16.8 7.9l-3.6 8.2-1.8-.8 3.6-8.2zM8 5h8v2H8z"/>
  </g>
</svg>`;

/** The nbflow icon: three tasks joined as a small DAG. */
export const nbflowIcon = new LabIcon({ name: 'nbflow:logo', svgstr: svg });
