/**
 * The model's chart as a self-contained SVG: per scenario, the worst queue age
 * of each minute (log scale) and the share of each CRM's tokens that are valid
 * for at least minValiditySeconds, through the outage (shaded).
 */
import type { CrmId, ModelRun } from './model.ts';

const COLORS: Record<CrmId, string> = { close: '#d62728', capsule: '#1f77b4', copper: '#2ca02c' };
const W = 460;
const H = 220;
const PAD = { left: 62, right: 12, top: 28, bottom: 34 };

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
const fmt = (n: number) => (Number.isInteger(n) ? String(n) : n.toFixed(2));

interface Panel {
  title: string;
  minutes: number;
  outage: [number, number] | undefined;
  series: { crm: CrmId; values: number[] }[];
  y: { log: boolean; min: number; max: number; ticks: number[]; label: (v: number) => string };
}

function panel(p: Panel, x0: number, y0: number): string {
  const pw = W - PAD.left - PAD.right;
  const ph = H - PAD.top - PAD.bottom;
  const sx = (m: number) => x0 + PAD.left + (m / p.minutes) * pw;
  const ty = (v: number) => (p.y.log ? Math.log10(Math.max(v, p.y.min)) : v);
  const lo = ty(p.y.min);
  const hi = ty(p.y.max);
  const sy = (v: number) => y0 + PAD.top + ph - ((Math.min(Math.max(ty(v), lo), hi) - lo) / (hi - lo)) * ph;
  const out: string[] = [];
  out.push(
    `<text x="${x0 + PAD.left}" y="${y0 + 16}" font-size="13" font-weight="bold">${esc(p.title)}</text>`,
  );
  if (p.outage) {
    const [a, b] = p.outage;
    out.push(
      `<rect x="${sx(a).toFixed(1)}" y="${y0 + PAD.top}" width="${(sx(b) - sx(a)).toFixed(1)}" height="${ph}" fill="#ffdd99" opacity="0.6"/>`,
    );
  }
  out.push(
    `<rect x="${x0 + PAD.left}" y="${y0 + PAD.top}" width="${pw}" height="${ph}" fill="none" stroke="#888"/>`,
  );
  for (const v of p.y.ticks) {
    const y = sy(v).toFixed(1);
    out.push(`<line x1="${x0 + PAD.left}" x2="${x0 + PAD.left + pw}" y1="${y}" y2="${y}" stroke="#eee"/>`);
    out.push(
      `<text x="${x0 + PAD.left - 4}" y="${y}" font-size="10" text-anchor="end" dominant-baseline="middle">${esc(p.y.label(v))}</text>`,
    );
  }
  for (let m = 0; m <= p.minutes; m += 30) {
    const x = sx(m).toFixed(1);
    out.push(`<text x="${x}" y="${y0 + PAD.top + ph + 14}" font-size="10" text-anchor="middle">${m}</text>`);
  }
  out.push(
    `<text x="${x0 + PAD.left + pw / 2}" y="${y0 + H - 4}" font-size="10" text-anchor="middle">minutes (outage shaded)</text>`,
  );
  for (const s of p.series) {
    const pts = s.values.map((v, m) => `${sx(m + 0.5).toFixed(1)},${sy(v).toFixed(1)}`).join(' ');
    out.push(`<polyline fill="none" stroke="${COLORS[s.crm]}" stroke-width="1.5" points="${pts}"/>`);
  }
  return out.join('\n');
}

/** One row per run: queue age on the left, share valid on the right; a legend on top. */
export function chartSvg(runs: { label: string; run: ModelRun }[]): string {
  const width = 2 * W;
  const height = runs.length * H + 30;
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif">`,
    `<rect width="100%" height="100%" fill="white"/>`,
  ];
  let lx = PAD.left;
  for (const crm of ['close', 'capsule', 'copper'] as CrmId[]) {
    parts.push(`<rect x="${lx}" y="10" width="14" height="4" fill="${COLORS[crm]}"/>`);
    parts.push(`<text x="${lx + 18}" y="16" font-size="12">${crm}</text>`);
    lx += 90;
  }
  runs.forEach(({ label, run }, row) => {
    const y0 = 30 + row * H;
    const outage = run.params.outage
      ? ([
          run.params.outage.startSeconds / 60,
          (run.params.outage.startSeconds + run.params.outage.durationSeconds) / 60,
        ] as [number, number])
      : undefined;
    const ageSeries = run.crms.map((c) => ({
      crm: c.id,
      values: Array.from(c.minute.ageMaxMs, (v) => v / 1000),
    }));
    const maxAge = Math.max(1, ...ageSeries.flatMap((s) => s.values));
    const top = 10 ** Math.ceil(Math.log10(maxAge));
    const ageTicks = [0.01, 0.1, 1, 10, 100, 1000, 10_000].filter((v) => v <= top);
    parts.push(
      panel(
        {
          title: `${label}: worst queue age per minute`,
          minutes: run.minutes,
          outage,
          series: ageSeries,
          y: { log: true, min: 0.01, max: top, ticks: ageTicks, label: (v) => `${fmt(v)} s` },
        },
        0,
        y0,
      ),
    );
    const validSeries = run.crms
      .filter((c) => run.params.crms.find((x) => x.id === c.id)?.lifetimeSeconds !== null)
      .map((c) => ({
        crm: c.id,
        values: Array.from(c.minute.under, (u) => (100 * (c.connections - u)) / c.connections),
      }));
    const lowest = Math.min(99.9, ...validSeries.flatMap((s) => s.values));
    const floor = Math.max(0, Math.floor(lowest / 5) * 5);
    const step = (100 - floor) / 4;
    parts.push(
      panel(
        {
          title: `${label}: % of tokens valid ≥ minValidity`,
          minutes: run.minutes,
          outage,
          series: validSeries,
          y: {
            log: false,
            min: floor,
            max: 100,
            ticks: [0, 1, 2, 3, 4].map((i) => floor + i * step),
            label: (v) => `${fmt(Math.round(v * 100) / 100)} %`,
          },
        },
        W,
        y0,
      ),
    );
  });
  parts.push('</svg>');
  return parts.join('\n') + '\n';
}
