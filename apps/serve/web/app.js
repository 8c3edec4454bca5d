// The kiln serve page: a form, a job polled until done, the gallery, and
// the numbers. No framework, no build step; talks to /api/v1 only.
'use strict';

const $ = (id) => document.getElementById(id);
const STAGES = [
  ['load', 'load', 'var(--load)'],
  ['text', 'text', 'var(--text)'],
  ['encode', 'encode', 'var(--encode)'],
  ['denoise', 'denoise', 'var(--denoise)'],
  ['decode', 'decode', 'var(--decode)'],
];
// form inputs by the request field an error names
const FIELD_INPUT = {
  prompt: 'prompt', negative_prompt: 'negative_prompt', width: 'width', height: 'height', steps: 'steps',
  cfg_scale: 'cfg_scale', sampler_name: 'sampler_name', seed: 'seed', n_iter: 'n_images', num_images: 'n_images',
  batch_size: 'batch_size', precision: 'precision',
};

const state = { info: null, key: localStorage.getItem('kiln.api_key') || '', job: null, polling: false };

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.detail) || `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
  }
}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (state.key) headers.Authorization = `Bearer ${state.key}`;
  if (options.json !== undefined) {
    headers['Content-Type'] = 'application/json';
    options = Object.assign({}, options, { method: options.method || 'POST', body: JSON.stringify(options.json) });
  }
  const res = await fetch(path, Object.assign({}, options, { headers }));
  let body = null;
  try { body = await res.json(); } catch (e) { body = null; }
  if (res.status === 401) {
    $('key-row').hidden = false;
    $('api-key').focus();
  }
  if (!res.ok) throw new ApiError(res.status, body);
  return body;
}

// ---- formatting ----

function seconds(s) {
  if (!isFinite(s)) return '–';
  if (s < 0.001) return '0 s';
  if (s < 1) return `${(s * 1000).toFixed(s < 0.1 ? 1 : 0)} ms`;
  if (s < 60) return `${s.toFixed(2)} s`;
  return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
}

function bytes(n) {
  if (!n) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'text') e.textContent = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

// ---- start ----

async function loadInfo() {
  const info = await api('/api/v1/info');
  state.info = info;
  const m = info.model;
  $('machine').textContent =
    `${m.name} · ${info.threads} threads · ${info.cpu.isa} · ${info.cpu.model}`;
  $('version').textContent = info.version;
  $('threads').textContent = info.threads;
  const L = info.limits;
  for (const id of ['width', 'height']) {
    Object.assign($(id), { min: L.min_size, max: L.max_size, step: L.size_multiple, value: m.native_resolution });
  }
  Object.assign($('steps'), { max: L.max_steps, value: m.default_steps });
  Object.assign($('cfg_scale'), { max: L.max_cfg, value: m.default_cfg });
  $('n_images').max = L.max_images;
  $('batch_size').max = L.max_images;
  const sampler = $('sampler_name');
  sampler.replaceChildren(...info.samplers.map((s) => el('option', { value: s.name, text: s.a1111_name })));
  sampler.value = m.default_sampler;
  const precision = $('precision');
  precision.replaceChildren(...info.precisions.map((p) => el('option', {
    value: p, text: p + (info.loaded_precisions.includes(p) ? '' : ' (loads on first use)'),
  })));
  precision.value = info.default_precision;
  $('tuned').checked = Boolean(info.tuned);
}

// ---- the form ----

function numberOf(id) {
  const v = $(id).value.trim();
  return v === '' ? undefined : Number(v);
}

function request() {
  return {
    prompt: $('prompt').value,
    negative_prompt: $('negative_prompt').value,
    width: numberOf('width'),
    height: numberOf('height'),
    steps: numberOf('steps'),
    cfg_scale: numberOf('cfg_scale'),
    sampler_name: $('sampler_name').value,
    seed: numberOf('seed') ?? -1,
    num_images: numberOf('n_images') ?? 1,
    batch_size: Math.min(numberOf('batch_size') ?? 1, numberOf('n_images') ?? 1),
    precision: $('precision').value,
    debug: $('debug').checked,
    tuned: $('tuned').checked,
    // tuned: the server fills in the batch size and precision kiln tune chose (undefined is not sent)
    ...($('tuned').checked ? { batch_size: undefined, precision: undefined } : {}),
  };
}

function showError(err) {
  for (const e of document.querySelectorAll('.invalid')) e.classList.remove('invalid');
  const box = $('form-error');
  if (!err) { box.hidden = true; return; }
  let text = err.message;
  const body = err.body || {};
  if (body.allowed) text += `\nallowed: ${JSON.stringify(body.allowed)}`;
  box.textContent = text;
  box.hidden = false;
  const input = body.field && FIELD_INPUT[body.field];
  if (input) { $(input).classList.add('invalid'); $(input).focus(); }
}

function setBusy(busy) {
  $('generate').disabled = busy;
  $('cancel').disabled = !busy;
  $('progress').hidden = false;
}

function showProgress(job) {
  const p = job.progress;
  $('progress-fill').style.width = `${Math.round(100 * p.fraction)}%`;
  let text;
  if (job.state === 'queued') {
    text = job.ahead ? `waiting: ${job.ahead} job${job.ahead === 1 ? '' : 's'} ahead` : 'starting…';
  } else if (job.state === 'running') {
    const image = Math.min(p.images_done + 1, p.images);
    text = p.steps
      ? `step ${p.step}/${p.steps} · image ${image}/${p.images} · ${seconds(p.elapsed_s)} · ETA ${seconds(p.eta_s)}`
      : `${p.stage || 'starting'}… ${seconds(p.elapsed_s)}`;
  } else if (job.state === 'done') {
    text = `done: ${job.images.length} image${job.images.length === 1 ? '' : 's'} in ${seconds(job.perf.timings.total_s)}`;
  } else if (job.state === 'cancelled') {
    text = `cancelled: kept ${job.images.length} finished image${job.images.length === 1 ? '' : 's'}`;
  } else {
    text = `failed: ${job.error || 'unknown error'}`;
  }
  if (job.state === 'running' && p.stage === 'validate') text = `checking against the f32 reference · ${text}`;
  $('progress-text').textContent = text;
}

async function generate(ev) {
  ev.preventDefault();
  if (state.job) return;
  showError(null);
  state.key = $('api-key').value.trim() || state.key;
  if (state.key) localStorage.setItem('kiln.api_key', state.key);
  let submitted;
  try {
    submitted = await api('/api/v1/jobs', { json: request() });
  } catch (err) {
    showError(err);
    return;
  }
  state.job = submitted.id;
  setBusy(true);
  $('progress-fill').style.width = '0%';
  $('progress-text').textContent = 'queued…';
  poll(submitted.id);
}

async function poll(id) {
  let job;
  for (;;) {
    try {
      job = await api(`/api/v1/jobs/${id}`);
    } catch (err) {
      showError(err);
      break;
    }
    showProgress(job);
    if (!['queued', 'running'].includes(job.state)) break;
    await new Promise((r) => setTimeout(r, 250));
  }
  state.job = null;
  setBusy(false);
  if (!job) return;
  if (job.state === 'failed') showError(new ApiError(400, { detail: job.error }));
  if (job.images && job.images.length) addToGallery(job);
  if (job.perf && job.state !== 'failed') showPerf(job);
  showDebug(job);
  refreshHistory();
}

async function cancel() {
  if (!state.job) return;
  try { await api(`/api/v1/jobs/${state.job}/cancel`, { method: 'POST' }); } catch (err) { showError(err); }
}

// ---- the gallery ----

function addToGallery(job) {
  $('gallery-empty').hidden = true;
  const r = job.request;
  const gallery = $('gallery');
  for (let i = job.images.length - 1; i >= 0; i--) {
    const img = job.images[i];
    const name = `kiln-${job.id}-${img.seed}.png`;
    const caption = el('figcaption', {},
      el('div', { text: r.prompt || '(no prompt)' }),
      el('div', { class: 'meta', text:
        `seed ${img.seed} · ${img.width}×${img.height} · ${job.perf.steps} steps · ${job.perf.sampler} · CFG ${r.cfg_scale < 0 ? 'default' : r.cfg_scale} · ${r.precision}` }),
      el('a', { href: img.url, download: name, text: 'download' }),
      el('details', {}, el('summary', { text: 'parameters' }), el('pre', { text: img.parameters })));
    const picture = el('img', { src: img.url, alt: `${r.prompt} (seed ${img.seed})`, width: img.width, height: img.height });
    if (img.width < 256) picture.classList.add('small'); // scale small images up in crisp pixels
    const figure = el('figure', {}, picture, caption);
    gallery.prepend(figure);
  }
}

// ---- the numbers ----

function stageTimes(t) {
  return { load: t.load_s, text: t.text_s, encode: t.encode_s, denoise: t.denoise_s, decode: t.decode_s };
}

function showPerf(job) {
  const p = job.perf;
  const t = p.timings;
  $('perf-empty').hidden = true;
  $('perf-body').hidden = false;
  $('perf-job').textContent = `· job ${job.id}`;
  const times = stageTimes(t);
  const max = Math.max(...Object.values(times), 1e-9);
  const rows = STAGES.filter(([key]) => key !== 'load' && key !== 'encode' || times[key] > 0).map(([key, label, color]) =>
    el('div', { class: 'stage', 'data-stage': key },
      el('span', { text: label }),
      el('div', { class: 'track' }, el('div', { class: 'fill', style: `width:${(100 * times[key] / max).toFixed(1)}%;background:${color}` })),
      el('span', { class: 'value', text: seconds(times[key]) })));
  $('stage-chart').replaceChildren(...rows);
  $('perf-total').textContent = seconds(t.total_s);
  $('perf-ips').textContent = p.images_per_s ? p.images_per_s.toFixed(p.images_per_s < 10 ? 2 : 1) : '–';
  $('perf-step').textContent = seconds(p.s_per_step);
  $('perf-peak').textContent = bytes(p.job_peak_rss_bytes || p.peak_rss_bytes);
  $('perf-plan').textContent =
    `${p.images} image${p.images === 1 ? '' : 's'} · ${p.batches} batch${p.batches === 1 ? '' : 'es'} of ${p.batch_size}`;
  $('perf-queued').textContent = seconds(t.queued_s);
  showOps(job.metrics);
}

// the op profile of the job (metrics.op_profile): the slowest kinds, each
// with its share of the graphs' time and, for matrix work, its GFLOP/s
function showOps(metrics) {
  const ops = metrics && metrics.op_profile ? metrics.op_profile.ops.slice(0, 8) : [];
  const rows = ops.map((o) =>
    el('div', { class: 'stage', 'data-op': o.op },
      el('span', { text: o.op }),
      el('div', { class: 'track' }, el('div', { class: 'fill', style: `width:${(100 * o.share).toFixed(1)}%;background:var(--accent)` })),
      el('span', { class: 'value', text: `${(100 * o.share).toFixed(1)}%` + (o.gflops > 0 ? ` · ${o.gflops.toFixed(1)} GFLOP/s` : '') })));
  $('op-chart').replaceChildren(...rows);
}

// debug mode's report (kiln_debug_report): infinities arrive as "inf"
function decibels(v) {
  if (v === 'inf') return '∞ (identical)';
  return typeof v === 'number' ? `${v.toFixed(2)} dB` : '–';
}

function showDebug(job) {
  const d = job.debug;
  $('debug-body').hidden = !d;
  if (!d) return;
  const nf = d.nonfinite;
  $('debug-nonfinite').textContent = nf
    ? `${nf.node} (${nf.op}, ${nf.graph}${nf.step >= 0 ? `, step ${nf.step}` : ''}): ${nf.count} × ${nf.first_value}`
    : 'none';
  $('debug-psnr-min').textContent = decibels(d.psnr_min_db);
  $('debug-psnr-mean').textContent = decibels(d.psnr_mean_db);
  const e = d.latent_max_error;
  $('debug-latent').textContent = typeof e === 'number'
    ? `${e.toPrecision(3)} of ${d.latent_max_abs.toPrecision(3)}` : (e || '–');
  $('debug-time').textContent = seconds(d.reference_s);
  $('debug-check').textContent = seconds(d.check_s);
  $('debug-reference').textContent = d.validated ? `against the ${d.reference}` : `validation ${d.reference}`;
}

async function refreshHistory() {
  let history, summary;
  try {
    [history, summary] = await Promise.all([api('/api/v1/perf/history?limit=30'), api('/api/v1/perf/summary')]);
  } catch (err) {
    return;
  }
  const jobs = history.jobs.filter((j) => j.status === 'ok');
  const box = $('history-chart');
  if (!jobs.length) {
    box.replaceChildren(el('p', { class: 'muted', text: 'No finished jobs yet.' }));
    $('history-summary').textContent = '';
    return;
  }
  const W = 600, H = 140, pad = 22;
  const max = Math.max(...jobs.map((j) => Object.values(stageTimes(j.timings)).reduce((a, b) => a + b, 0)), 1e-9);
  const bw = (W - pad) / Math.max(jobs.length, 10);
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
  svg.setAttribute('preserveAspectRatio', 'none');
  const label = document.createElementNS(ns, 'text');
  label.setAttribute('x', 0); label.setAttribute('y', 10); label.setAttribute('font-size', 10); label.setAttribute('fill', '#78716c');
  label.textContent = seconds(max);
  svg.append(label);
  jobs.forEach((j, i) => {
    let y = H;
    const times = stageTimes(j.timings);
    for (const [key, name, color] of STAGES) {
      const h = (H - 14) * times[key] / max;
      if (h <= 0) continue;
      y -= h;
      const r = document.createElementNS(ns, 'rect');
      r.setAttribute('x', pad + i * bw + 1); r.setAttribute('width', Math.max(bw - 2, 1));
      r.setAttribute('y', y); r.setAttribute('height', h);
      r.setAttribute('fill', getComputedStyle(document.documentElement).getPropertyValue(color.slice(4, -1)).trim());
      const title = document.createElementNS(ns, 'title');
      title.textContent = `job ${j.id}: ${name} ${seconds(times[key])} (${j.images} × ${j.width}×${j.height}, ${j.steps} steps, ${j.precision})`;
      r.append(title);
      svg.append(r);
    }
  });
  const legend = el('div', { class: 'legend' }, ...STAGES.map(([, name, color]) =>
    el('span', {}, el('i', { style: `background:${color}` }), name)));
  box.replaceChildren(svg, legend);
  const s = summary.stages.total_s;
  $('history-summary').textContent = s.count
    ? `${summary.count} jobs, ${summary.images} images · total p50 ${seconds(s.p50)}, p95 ${seconds(s.p95)}, min ${seconds(s.min)}, max ${seconds(s.max)} · per step p50 ${seconds(summary.stages.s_per_step.p50)}`
    : '';
}

// ---- wiring ----

$('form').addEventListener('submit', generate);
$('cancel').addEventListener('click', cancel);
$('seed-random').addEventListener('click', () => { $('seed').value = Math.floor(Math.random() * 4294967296); });
$('api-key').value = state.key;
$('api-key').addEventListener('change', () => {
  state.key = $('api-key').value.trim();
  localStorage.setItem('kiln.api_key', state.key);
  start();
});

async function start() {
  try {
    await loadInfo();
    showError(null);
    refreshHistory();
  } catch (err) {
    $('machine').textContent = err.status === 401 ? 'this server needs an API key' : `cannot reach the server: ${err.message}`;
  }
}
start();
