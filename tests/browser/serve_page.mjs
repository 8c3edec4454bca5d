// The kiln serve page in a real browser: Debian's chromium (never a
// downloaded one) driven by playwright-core.
//
//   node serve_page.mjs URL SCREENSHOT.png [PHONE_SCREENSHOT.png]
//
// Opens the page, types a prompt, clicks Generate, waits for the images,
// checks they decoded and that the performance panel shows numbers, checks
// a refusal names its field, and saves screenshots (desktop, and a
// phone-sized one that must not scroll sideways). Prints "N passed, N failed".
import { chromium } from 'playwright-core';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const [url, shot, phoneShot] = process.argv.slice(2);
if (!url || !shot) {
  console.error('usage: node serve_page.mjs URL SCREENSHOT.png [PHONE_SCREENSHOT.png]');
  process.exit(2);
}

let passed = 0;
const failures = [];
function check(cond, message) {
  if (cond) passed++;
  else {
    failures.push(message);
    console.error(`FAIL ${message}`);
  }
  return cond;
}

// A few finished jobs first, so the recent-jobs chart has something to draw.
for (const seed of [1, 2, 3]) {
  const res = await fetch(new URL('/sdapi/v1/txt2img', url), {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ prompt: 'warm-up', steps: 4 + 4 * seed, seed }),
  });
  check(res.status === 200, `warm-up job: HTTP ${res.status}`);
}

const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-chromium-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: '/usr/bin/chromium',
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  viewport: { width: 1280, height: 900 },
});
const errors = [];
try {
  const page = context.pages()[0] || await context.newPage();
  page.on('pageerror', (e) => errors.push(`page error: ${e.message}`));
  // (the refusal below is meant to answer 400; chromium logs that as an error)
  page.on('console', (m) => {
    if (m.type() === 'error' && !/status of 400/.test(m.text())) errors.push(`console: ${m.text()}`);
  });
  page.setDefaultTimeout(60000);

  await page.goto(url);
  await page.waitForFunction(() => document.querySelectorAll('#sampler_name option').length > 0);
  check(/threads/.test(await page.textContent('#machine')), 'the header names the model and threads');
  check(/^\d+$/.test((await page.textContent('#threads')).trim()), 'the thread count is shown');
  check(!(await page.isDisabled('#tuned')) && !(await page.isDisabled('#debug')), 'tuned and debug are offered');
  await page.waitForFunction(() => document.querySelectorAll('#history-chart rect').length > 0);
  check(true, 'the recent-jobs chart draws the warm-up jobs');

  await page.fill('#prompt', 'a red circle on a blue background');
  await page.fill('#negative_prompt', 'blurry');
  await page.fill('#steps', '24');
  await page.fill('#n_images', '4');
  await page.fill('#batch_size', '2');
  await page.fill('#seed', '1234');
  await page.click('#generate');
  // the progress line shows steps while it runs (the tiny model is quick: seen, or already done)
  await page.waitForFunction(() => /step \d+\/\d+|done/.test(document.querySelector('#progress-text').textContent));
  await page.waitForFunction(() => {
    const imgs = [...document.querySelectorAll('#gallery img')];
    return imgs.length === 4 && imgs.every((i) => i.complete && i.naturalWidth > 0);
  });
  const sizes = await page.$$eval('#gallery img', (imgs) => imgs.map((i) => [i.naturalWidth, i.naturalHeight]));
  check(sizes.every(([w, h]) => w === 64 && h === 64), `images decoded at 64x64: ${JSON.stringify(sizes)}`);
  check(/done: 4 images/.test(await page.textContent('#progress-text')), 'the progress line says done');
  const links = await page.$$eval('#gallery a[download]', (as) => as.map((a) => a.getAttribute('href')));
  check(links.length === 4 && links.every((h) => /\/api\/v1\/jobs\/\d+\/images\/\d\.png$/.test(h)), 'download links');
  check(/Seed: 1234/.test(await page.$$eval('#gallery pre', (p) => p.map((x) => x.textContent).join('\n'))),
    'each image shows its parameters');

  for (const id of ['#perf-total', '#perf-ips', '#perf-step', '#perf-peak']) {
    const text = (await page.textContent(id)).trim();
    check(/\d/.test(text), `${id} shows a number: '${text}'`);
  }
  check(/4 images · 2 batches of 2/.test(await page.textContent('#perf-plan')), 'the batch plan');
  const stages = await page.$$eval('#stage-chart .stage', (rows) => rows.map((r) => r.dataset.stage));
  check(['text', 'denoise', 'decode'].every((s) => stages.includes(s)), `stage bars: ${stages}`);
  const ops = await page.$$eval('#op-chart .stage', (rows) => rows.map((r) => r.dataset.op));
  check(ops.includes('conv2d') && /GFLOP\/s/.test(await page.textContent('#op-chart')), `op profile bars: ${ops}`);
  await page.waitForFunction(() => document.querySelectorAll('#history-chart rect').length >= 8);
  check(/p50/.test(await page.textContent('#history-summary')), 'the history summary line');

  await page.screenshot({ path: shot, fullPage: true });

  // a refusal names the field and marks the input
  await page.fill('#width', '100');
  await page.click('#generate');
  await page.waitForSelector('#form-error:not([hidden])');
  check(/width/.test(await page.textContent('#form-error')), 'the refusal names width');
  check(await page.$eval('#width', (e) => e.classList.contains('invalid')), 'the width input is marked');
  await page.fill('#width', '64');

  // debug mode: the report shows in the performance panel
  await page.fill('#n_images', '1');
  await page.fill('#steps', '4');
  await page.check('#debug');
  await page.click('#generate');
  await page.waitForSelector('#debug-body:not([hidden])');
  check(/^none$/.test((await page.textContent('#debug-nonfinite')).trim()), 'debug: no NaN/Inf in the tiny model');
  for (const id of ['#debug-psnr-min', '#debug-psnr-mean']) {
    const text = (await page.textContent(id)).trim();
    check(/dB$|identical/.test(text), `${id} shows a PSNR: '${text}'`);
  }
  check(/\d/.test(await page.textContent('#debug-latent')), 'debug: the latent error is shown');
  check(/f32 reference/.test(await page.textContent('#debug-reference')), 'debug: what the reference was');
  await page.uncheck('#debug');

  if (phoneShot) {
    await page.setViewportSize({ width: 390, height: 844 });
    await page.waitForTimeout(200);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    check(overflow <= 1, `the phone-sized page scrolls sideways by ${overflow}px`);
    await page.screenshot({ path: phoneShot, fullPage: true });
  }
  check(errors.length === 0, `no errors in the page: ${errors.join('; ')}`);
} finally {
  await context.close();
  fs.rmSync(profile, { recursive: true, force: true });
}
console.log(`${passed} passed, ${failures.length} failed`);
process.exit(failures.length ? 1 : 0);
