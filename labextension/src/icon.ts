/** The GPU icon of the launcher card and the side panel tab. */

import { LabIcon } from '@jupyterlab/ui-components';

const svgstr = `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" width="16" height="16">
  <g class="jp-icon3" fill="#616161">
    <path d="M2 7h17a2 2 0 0 1 2 2v6a2 2 0 0 1-2 2h-5v2h-2v-2H7v2H5v-2H2zm2 2v6h15V9z"/>
    <circle cx="9" cy="12" r="2"/><circle cx="15" cy="12" r="2"/>
  </g>
</svg>`;

export const gpuIcon = new LabIcon({ name: 'aispike-hub-lab:gpu', svgstr });
