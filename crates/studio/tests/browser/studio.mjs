// The studio in a real browser: Debian's Chromium (/usr/bin/chromium) driven by playwright-core walks what a
// user does with a recorded RAG run: the runs list, the trace's tree with a model call opened, the playground
// (edit the prompt, rerun, compare), the rerun in the list, a dataset from the trace, an evaluation of it.
// Every page gets a full-page screenshot. crates/studio/tests/browser.rs runs this against a studio serving a
// run it recorded from SmolLM2; `bash .ci/setup-browser.sh` installs Chromium and playwright-core.
//
//   NODE_PATH=$CATENA_CACHE_DIR/browser/node_modules node crates/studio/tests/browser/studio.mjs \
//       http://127.0.0.1:7180 target/studio-screenshots
//
// Arguments (or environment):
//   1. the studio's base URL (STUDIO_URL)
//   2. the screenshot directory (STUDIO_SCREENSHOTS; default ./studio-screenshots)
// Optional environment:
//   STUDIO_E2E_RUN_NAME     the root name of the trace to open (default: the newest trace)
//   STUDIO_E2E_QUESTION     text the model call's input must contain
//   STUDIO_E2E_KINDS        run kinds the trace must have, comma-separated (default chain,retrieval,llm)
//   STUDIO_E2E_MODEL        the model to put in the playground's and the evaluation's model fields
//   STUDIO_E2E_EVALUATORS   evaluators to tick (default exact_match,embedding_similarity,llm_judge)
//   STUDIO_E2E_DATASET      the dataset to create (default e2e-<time>)
//   STUDIO_E2E_UNTIL        stop successfully after this step (list, tree, playground, rerun, dataset); default:
//                           all steps
//   STUDIO_E2E_TIMEOUT_MS   the hard limit for the whole walk (default 120000)
//
// Exits 0 when every step passed; otherwise prints `FAILED at step "<step>": <why>`, saves a screenshot of the
// page as it was (failure-<step>.png) and exits 1 (2 on the overall timeout, 3 when playwright-core is missing).
//
// Steps: list, tree, playground, rerun, dataset, evaluation. The selector contract of every page is in the header
// of crates/studio/tests/browser.rs; a missing element fails its step with the selector's name (a studio without
// the playground stops at "playground" with a PENDING message).

import { createRequire } from 'node:module';
import { mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

const require = createRequire(import.meta.url);
let chromium;
try {
  // NODE_PATH is honoured by require (ES module imports ignore it).
  ({ chromium } = require('playwright-core'));
} catch (e) {
  console.error(`FAILED at step "setup": playwright-core cannot be loaded (${e.code ?? e.message}); NODE_PATH is ` +
    `${process.env.NODE_PATH ?? 'unset'}. Run \`bash .ci/setup-browser.sh\` and set ` +
    'NODE_PATH=$CATENA_CACHE_DIR/browser/node_modules.');
  process.exit(3);
}

const CHROMIUM = '/usr/bin/chromium';
// Without these Chromium stalls on a machine without internet (background fetches, component updates, sync).
const CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--no-first-run'];
const EVALUATORS = ['exact_match', 'regex', 'json_schema', 'embedding_similarity', 'llm_judge'];
// How long a page that calls the model (a rerun, an evaluation) may take to answer.
const MODEL_WAIT = 90000;
const STEPS = ['list', 'tree', 'playground', 'rerun', 'dataset', 'evaluation'];

const env = process.env;
const base = (process.argv[2] ?? env.STUDIO_URL ?? '').replace(/\/+$/, '');
const shots = path.resolve(process.argv[3] ?? env.STUDIO_SCREENSHOTS ?? 'studio-screenshots');
const runName = env.STUDIO_E2E_RUN_NAME || null;
const question = env.STUDIO_E2E_QUESTION || null;
const kinds = (env.STUDIO_E2E_KINDS || 'chain,retrieval,llm').split(',').map((k) => k.trim()).filter(Boolean);
const model = env.STUDIO_E2E_MODEL || null;
const evaluators = (env.STUDIO_E2E_EVALUATORS || 'exact_match,embedding_similarity,llm_judge')
  .split(',').map((k) => k.trim()).filter(Boolean);
const dataset = env.STUDIO_E2E_DATASET || `e2e-${Date.now()}`;
const until = env.STUDIO_E2E_UNTIL || STEPS[STEPS.length - 1];
const totalTimeout = Number(env.STUDIO_E2E_TIMEOUT_MS || 120000);

if (!/^https?:\/\//.test(base)) {
  console.error('usage: node studio.mjs <studio base URL> [screenshot dir]   (or STUDIO_URL, STUDIO_SCREENSHOTS)');
  process.exit(1);
}
if (!STEPS.includes(until)) {
  console.error(`STUDIO_E2E_UNTIL must be one of ${STEPS.join(', ')}, not ${until}`);
  process.exit(1);
}
mkdirSync(shots, { recursive: true });
// The previous walk's screenshots go: what is there afterwards is this walk's.
for (const file of readdirSync(shots)) {
  if (/^(\d\d-.*|failure-.*)\.png$/.test(file)) rmSync(path.join(shots, file));
}

const started = Date.now();
const log = (line) => console.log(`[studio-e2e ${((Date.now() - started) / 1000).toFixed(1).padStart(5)} s] ${line}`);
let current = 'launch';
let page = null;
let context = null;
const userDataDir = mkdtempSync(path.join(tmpdir(), 'catena-studio-chromium-'));
const saved = [];

class Pending extends Error {}
class CheckFailed extends Error {}

function check(condition, message) {
  if (!condition) throw new CheckFailed(message);
}

async function shot(name) {
  const file = path.join(shots, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true, timeout: 15000 });
  saved.push(file);
  log(`  screenshot ${file}`);
}

async function fail(message, code) {
  console.error(`FAILED at step "${current}": ${message}`);
  if (page) {
    const file = path.join(shots, `failure-${current}.png`);
    await Promise.race([
      page.screenshot({ path: file, fullPage: true }).then(() => console.error(`  the page as it was: ${file}`)),
      new Promise((resolve) => setTimeout(resolve, 5000)),
    ]).catch(() => {});
    console.error(`  at ${page.url()}`);
  }
  await Promise.race([context?.close(), new Promise((resolve) => setTimeout(resolve, 5000))]).catch(() => {});
  rmSync(userDataDir, { recursive: true, force: true });
  process.exit(code);
}

const hardStop = setTimeout(() => {
  fail(`the walk took more than ${totalTimeout} ms (STUDIO_E2E_TIMEOUT_MS)`, 2);
}, totalTimeout);

// What every page must not do: load anything from elsewhere (the studio works offline), answer with an error,
// or throw in the page.
const problems = [];
function watch(p) {
  const origin = new URL(base).origin;
  p.on('request', (r) => {
    const url = r.url();
    if (!url.startsWith(origin) && !/^(data|about|blob|chrome-error):/.test(url)) {
      problems.push(`loaded ${url} from outside the studio (no CDN, no network)`);
    }
  });
  p.on('response', (r) => {
    if (r.status() >= 400 && !r.url().endsWith('/favicon.ico')) problems.push(`HTTP ${r.status()} for ${r.url()}`);
  });
  p.on('pageerror', (e) => problems.push(`script error in the page: ${e.message}`));
  p.on('console', (m) => {
    if (m.type() === 'error' && !/favicon\.ico/.test(m.text() + (m.location()?.url ?? ''))) {
      problems.push(`console error: ${m.text()}`);
    }
  });
}

function noProblems() {
  check(problems.length === 0, problems.splice(0).join('; '));
}

/// The page is styled (the stylesheet loaded and applies) and nothing sticks out sideways.
async function looksRight(what) {
  const styled = await page.evaluate(() => {
    const header = document.querySelector('header.top');
    return header ? getComputedStyle(header).backgroundColor : null;
  });
  check(styled && styled !== 'rgba(0, 0, 0, 0)', `${what}: the stylesheet is not applied (header background ${styled})`);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(overflow <= 1, `${what}: the page is ${overflow}px wider than the 1440px window (something overflows)`);
}

async function step(name, body) {
  current = name;
  const t = Date.now();
  log(`▶ ${name}`);
  await body();
  noProblems();
  log(`✓ ${name} (${((Date.now() - t) / 1000).toFixed(1)} s)`);
  if (name === until && env.STUDIO_E2E_UNTIL) {
    await finish(`stopped after "${name}" (STUDIO_E2E_UNTIL=${until})`);
  }
}

async function finish(why) {
  clearTimeout(hardStop);
  await context.close();
  rmSync(userDataDir, { recursive: true, force: true });
  log(`passed: ${why}; ${saved.length} screenshots in ${shots}`);
  process.exit(0);
}

/// The id at the end of a `/traces/<id>` URL.
function traceIdOf(href) {
  const m = /\/traces\/([0-9a-f]+)/.exec(href ?? '');
  return m ? m[1] : null;
}

async function main() {
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width: 1440, height: 900 },
    deviceScaleFactor: 1,
    timeout: 30000,
  });
  page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(15000);
  page.setDefaultNavigationTimeout(30000);
  watch(page);
  log(`Chromium ${context.browser()?.version() ?? ''} (${CHROMIUM}), studio ${base}`);

  let traceId;
  let tracesBefore;

  await step('list', async () => {
    await page.goto(`${base}/`);
    const rows = page.locator('table.runs tbody tr');
    await rows.first().waitFor({ state: 'visible' }).catch(() => {
      throw new Error('the runs list has no rows (table.runs tbody tr): no run was recorded, or the list is broken');
    });
    tracesBefore = Number((await page.locator('[data-testid=total-traces]').innerText()).trim());
    const count = await rows.count();
    check(tracesBefore >= 1 && tracesBefore === count,
      `[data-testid=total-traces] says ${tracesBefore}, the table has ${count} rows`);
    const row = runName
      ? rows.filter({ has: page.locator('td:nth-child(2) a', { hasText: runName }) })
      : rows.first();
    check((await row.count()) === 1, `one row whose trace link says "${runName}" expected, found ${await row.count()}`);
    traceId = await row.getAttribute('data-trace');
    check(/^[0-9a-f]{32}$/.test(traceId ?? ''), `the row's data-trace is ${traceId}, not a trace id`);
    const link = row.locator('td:nth-child(2) a');
    check(traceIdOf(await link.getAttribute('href')) === traceId, 'the row links to its own trace');
    const text = await row.innerText();
    check(/\bok\b/i.test(text), `the RAG run's row shows no ok status: ${text}`);
    check(/\b[1-9]\d* \/ [1-9]\d*\b/.test(text), `the row shows no token counts (in / out): ${text}`);
    await looksRight('runs list');
    await shot('01-runs');
  });

  let llm;
  await step('tree', async () => {
    await page.locator(`table.runs tbody tr[data-trace="${traceId}"] td:nth-child(2) a`).click();
    await page.waitForURL(`**/traces/${traceId}`);
    const runs = page.locator('details.run');
    await runs.first().waitFor();
    const found = await runs.evaluateAll((els) => els.map((e) => e.dataset.kind));
    for (const kind of kinds) {
      check(found.includes(kind), `no ${kind} run in the tree (details.run[data-kind=${kind}]); kinds: ${found}`);
    }
    // Tree order: the root first and least indented; retrieval before the model call.
    const indents = await runs.evaluateAll((els) =>
      els.map((e) => parseFloat(getComputedStyle(e.querySelector('summary .name') ?? e).paddingLeft) || 0));
    check(indents.slice(1).every((i) => i > indents[0]), `the root is not the outermost run: indents ${indents}`);
    if (found.includes('retrieval') && found.includes('llm')) {
      check(found.indexOf('retrieval') < found.indexOf('llm'), `retrieval after the model call: ${found}`);
    }
    // The waterfall: every bar drawn inside its track; the model call starts after the retrieval.
    const bars = await runs.evaluateAll((els) => els.map((e) => {
      const bar = e.querySelector('.bar')?.getBoundingClientRect();
      const track = e.querySelector('.track')?.getBoundingClientRect();
      return bar && track ? { kind: e.dataset.kind, left: bar.left, right: bar.right, width: bar.width,
        tl: track.left, tr: track.right } : null;
    }));
    check(bars.every((b) => b && b.width >= 1 && b.left >= b.tl - 1 && b.right <= b.tr + 1),
      `a waterfall bar is missing, empty or outside its track: ${JSON.stringify(bars)}`);
    const bar = (kind) => bars.find((b) => b.kind === kind);
    if (bar('retrieval') && bar('llm')) {
      check(bar('llm').left >= bar('retrieval').right - 2, 'the model call\'s bar starts before the retrieval ends');
    }
    // Open the model call: its detail shows the messages in and the answer out.
    llm = page.locator('details.run[data-kind=llm]').first();
    check(!(await llm.evaluate((e) => e.open)), 'the model call is open before it was clicked');
    await llm.locator(':scope > summary').click();
    check(await llm.evaluate((e) => e.open), 'clicking the model call\'s summary did not open it');
    const detail = llm.locator(':scope > .detail');
    await detail.waitFor({ state: 'visible' });
    const detailText = await detail.innerText();
    check(/input/i.test(detailText) && /output/i.test(detailText), `the model call shows no input/output: ${detailText}`);
    if (question) check(detailText.includes(question), `the model call's input does not contain "${question}"`);
    // The chain's run (recorded with its content): the question in, the answer with its ranked sources out.
    if (kinds.includes('chain')) {
      const chain = page.locator('details.run[data-kind=chain]').first();
      if (!(await chain.evaluate((e) => e.open))) await chain.locator(':scope > summary').click();
      const chainDetail = chain.locator(':scope > .detail');
      await chainDetail.waitFor({ state: 'visible' });
      check((await chainDetail.locator('.bubble-assistant').count()) === 1, 'the chain\'s answer is not shown as an answer');
      check((await chainDetail.locator('table.results tbody tr').count()) >= 1, 'the chain\'s sources are not a ranked table');
      if (question) check((await chainDetail.innerText()).includes(question), 'the chain\'s input lacks the question');
      await shot('02-chain-answer');
      await chain.locator(':scope > summary').click();
    }
    await looksRight('trace page');
    await shot('02-trace');
  });

  // The playground's and datasets' pages (contract in the header of crates/studio/tests/browser.rs).
  let newTraceId;
  await step('playground', async () => {
    const open = llm.locator('a[data-testid=open-playground]');
    if ((await open.count()) === 0) {
      throw new Pending('PENDING: no a[data-testid=open-playground] in the model call\'s detail: the playground ' +
        'is not on the trace page yet (set STUDIO_E2E_UNTIL=tree to check the list and the tree only)');
    }
    await open.click();
    await page.waitForURL(/\/playground\/[0-9a-f]+/);
    const boxes = page.locator('textarea[name^="content-"]');
    await boxes.first().waitFor();
    const count = await boxes.count();
    check(count >= 2, `the playground shows ${count} message boxes (textarea[name=content-N]); the RAG call has 2`);
    for (const field of ['select[name=provider]', 'input[name=model]', 'input[name=temperature]',
      'input[name=max_tokens]', '[data-testid=rerun]']) {
      check((await page.locator(field).count()) === 1, `the playground has no ${field}`);
    }
    // The last user message: by its role field when the page has one, else the last box.
    let index = count - 1;
    for (let i = count - 1; i >= 0; i -= 1) {
      const role = page.locator(`[name="role-${i}"]`);
      if ((await role.count()) === 0) break;
      if (/user/i.test(await role.inputValue().catch(() => ''))) { index = i; break; }
    }
    const box = page.locator(`textarea[name="content-${index}"]`);
    const original = await box.inputValue();
    if (question) check(original.includes(question), `content-${index} does not hold the question: ${original}`);
    const edited = question && original.includes(question)
      ? original.replace(question, `${question} Answer in one short sentence.`)
      : `${original}\nAnswer in one short sentence.`;
    await box.fill(edited);
    if (model) await page.locator('input[name=model]').fill(model);
    await page.locator('input[name=temperature]').fill('0');
    await page.locator('input[name=max_tokens]').fill('32');
    await shot('03-playground');
    // The rerun answers when the model has: the click waits for that page as long as the model may take.
    await page.locator('[data-testid=rerun]').click({ timeout: MODEL_WAIT });
    const fresh = page.locator('[data-testid=new-output]');
    await fresh.waitFor({ timeout: MODEL_WAIT });
    const before = (await page.locator('[data-testid=original-output]').innerText()).trim();
    const after = (await fresh.innerText()).trim();
    check(before.length > 0, 'the original output ([data-testid=original-output]) is empty');
    check(after.length > 0, 'the new output ([data-testid=new-output]) is empty');
    const href = await page.locator('a[data-testid=new-trace]').getAttribute('href');
    newTraceId = traceIdOf(href);
    check(newTraceId && newTraceId !== traceId, `a[data-testid=new-trace] links to ${href}, not a new trace`);
    await looksRight('rerun result');
    await shot('04-rerun');
  });

  await step('rerun', async () => {
    await page.locator('a[data-testid=new-trace]').click();
    await page.waitForURL(`**/traces/${newTraceId}`);
    check((await page.locator('details.run[data-kind=llm]').count()) >= 1, 'the rerun\'s trace has no model call');
    await page.goto(`${base}/`);
    const row = page.locator(`table.runs tbody tr[data-trace="${newTraceId}"]`);
    check((await row.count()) === 1, `the rerun's trace ${newTraceId} is not in the runs list`);
    check(/playground/.test(await row.innerText()), 'the rerun\'s row is not tagged playground');
    const total = Number((await page.locator('[data-testid=total-traces]').innerText()).trim());
    check(total === tracesBefore + 1, `total-traces went from ${tracesBefore} to ${total}, not one more`);
    await looksRight('runs list with the rerun');
    await shot('05-runs-with-rerun');
  });

  let examples;
  await step('dataset', async () => {
    await page.goto(`${base}/traces/${traceId}`);
    // The form is the model call's (in its detail, opened first) or the page's.
    const call = page.locator('details.run[data-kind=llm]').first();
    let form = call.locator('[data-testid=add-to-dataset]');
    if ((await form.count()) === 1) {
      if (!(await call.evaluate((e) => e.open))) await call.locator(':scope > summary').click();
    } else {
      form = page.locator('[data-testid=add-to-dataset]');
      check((await form.count()) === 1, 'the trace page has no form [data-testid=add-to-dataset]');
    }
    await form.locator('input[name=dataset]').fill(dataset);
    await Promise.all([
      page.waitForLoadState('load'),
      form.locator('button[type=submit], input[type=submit], button:not([type])').first().click(),
    ]);
    if (!page.url().includes(`/datasets/${encodeURIComponent(dataset)}`)) {
      await page.goto(`${base}/datasets/${encodeURIComponent(dataset)}`);
    }
    examples = await page.locator('[data-testid=example]').count();
    check(examples >= 1, `the dataset ${dataset} has no [data-testid=example] after adding the trace`);
    await looksRight('dataset');
    await shot('06-dataset');
  });

  await step('evaluation', async () => {
    const form = page.locator('[data-testid=run-eval]');
    check((await form.count()) === 1, 'the dataset page has no form [data-testid=run-eval]');
    for (const name of EVALUATORS) {
      const box = form.locator(`input[name=evaluator][value=${name}]`);
      check((await box.count()) === 1, `no evaluator checkbox input[name=evaluator][value=${name}]`);
      await box.setChecked(evaluators.includes(name));
    }
    check((await form.locator('select[name=provider]').count()) === 1, 'the evaluation form has no provider');
    if (model) await form.locator('input[name=model]').fill(model);
    await form.locator('button[type=submit], input[type=submit], button:not([type])').first()
      .click({ timeout: MODEL_WAIT });
    const summary = page.locator('[data-testid=experiment-summary]');
    await summary.waitFor({ timeout: MODEL_WAIT });
    const scores = await page.locator('[data-testid=score]').count();
    check(scores >= examples, `${scores} [data-testid=score] cells for ${examples} examples`);
    const values = await page.locator('[data-testid=score]').allInnerTexts();
    check(values.some((v) => /\d/.test(v)), `no [data-testid=score] holds a number: ${JSON.stringify(values)}`);
    // Every chosen evaluator graded (the LLM judge on the local model too): a score, never an evaluator error.
    for (const name of evaluators) {
      const mine = values.filter((v) => v.trim().startsWith(`${name} `));
      check(mine.length >= examples, `${mine.length} ${name} scores for ${examples} examples: ${JSON.stringify(values)}`);
      const broken = mine.filter((v) => /error/.test(v));
      if (broken.length > 0) {
        const why = await page.locator('.score-error').allInnerTexts();
        check(false, `${name} failed to grade: ${JSON.stringify(why)}`);
      }
    }
    check((await summary.innerText()).trim().length > 0, 'the experiment summary is empty');
    await looksRight('experiment');
    await shot('07-experiment');
  });

  await finish(`all ${STEPS.length} steps`);
}

main().catch((e) => fail(e instanceof Pending || e instanceof CheckFailed ? e.message : (e?.stack ?? String(e)), 1));
