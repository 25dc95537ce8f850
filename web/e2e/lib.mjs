// Helpers for the end-to-end run: processes with timeouts, the browser, page actions.
import { spawn } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const CHROMIUM = process.env.CHROME_BIN || '/usr/bin/chromium';
export const STEP_MS = Number(process.env.E2E_STEP_MS ?? 20000);

export function log(...a) {
  const t = ((Date.now() - START) / 1000).toFixed(1).padStart(6);
  console.log(`[e2e ${t}s]`, ...a);
}
const START = Date.now();

/** Run a command; resolves {code, out}; kills the process group after timeoutMs. */
export function run(cmd, args, { cwd, env, timeoutMs = 60000, quiet = false } = {}) {
  return new Promise((resolve) => {
    const p = spawn(cmd, args, { cwd, env: { ...process.env, ...env }, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    const onData = (d) => {
      out += d;
      if (!quiet) process.stdout.write(String(d).replace(/^/gm, '    | '));
    };
    p.stdout.on('data', onData);
    p.stderr.on('data', onData);
    const timer = setTimeout(() => {
      out += `\n(timeout after ${timeoutMs} ms)\n`;
      try {
        process.kill(-p.pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }, timeoutMs);
    p.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? (signal ? 128 : 1), out });
    });
    p.on('error', (e) => {
      clearTimeout(timer);
      resolve({ code: 127, out: String(e) });
    });
  });
}

export async function launchBrowser() {
  // Playwright gives every launch a fresh temporary profile (user-data-dir) of its own.
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    timeout: 30000,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  const close = async () => {
    await Promise.race([browser.close().catch(() => undefined), sleep(5000)]);
  };
  return { browser, close };
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Returned by a waitFor callback: not done yet, with what was seen (for the timeout message). */
export class NotYet {
  constructor(info) {
    this.info = info;
  }
}
export const notYet = (info) => new NotYet(info);

/** Polls fn until it returns a truthy value that is not a NotYet; throws with the last value after timeoutMs. */
export async function waitFor(what, fn, timeoutMs = STEP_MS, everyMs = 150) {
  const end = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last && !(last instanceof NotYet)) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last: ${fmt(last)}`);
    await sleep(everyMs);
  }
}

function fmt(v) {
  if (v instanceof Error) return v.message;
  if (v instanceof NotYet) return fmt(v.info);
  try {
    return JSON.stringify(v)?.slice(0, 600);
  } catch {
    return String(v);
  }
}

export async function newUserPage(browser, { baseUrl, viewport = { width: 1280, height: 800 }, locale = 'en-US', name }) {
  const context = await browser.newContext({ viewport, locale, timezoneId: 'Asia/Seoul' });
  context.setDefaultTimeout(STEP_MS);
  const page = await context.newPage();
  const wsUrls = []; // every WebSocket the page opens: none may carry a token
  page.on('websocket', (ws) => wsUrls.push(ws.url()));
  page.on('pageerror', (e) => log(`[${name}] page error:`, e.message));
  page.on('console', (m) => {
    if (m.type() === 'error') log(`[${name}] console.error:`, m.text());
  });
  await page.goto(baseUrl, { timeout: STEP_MS });
  return { context, page, name, baseUrl, wsUrls };
}

export async function login(page, userId) {
  await page.getByTestId('login-input').fill(userId);
  await page.getByTestId('login-submit').click();
  await page.getByTestId('room-list').or(page.getByText(/No rooms yet|아직 채팅방이 없습니다/)).first().waitFor();
  await waitFor('connected status', async () => (await status(page)).status === 'connected');
}

export async function status(page) {
  const el = page.getByTestId('conn-status');
  return {
    status: await el.getAttribute('data-status'),
    nodeId: await el.getAttribute('data-node-id'),
    sessionId: await el.getAttribute('data-session-id'),
  };
}

export async function createRoom(page, name) {
  await page.getByTestId('new-room').click();
  await page.getByTestId('new-room-name').fill(name);
  await page.getByTestId('new-room-submit').click();
  await page.getByTestId('chat-title').filter({ hasText: name }).waitFor();
}

/** The room list shows a page of the newest rooms: a room is found through its search box. */
export async function findRoom(page, name) {
  await page.getByTestId('room-search').fill(name);
  await waitFor('search answered', async () => (await page.getByTestId('room-list').getAttribute('data-search')) === name);
  const item = page.getByTestId('room-item').filter({ hasText: name }).first();
  await item.waitFor();
  return item;
}

export async function openRoom(page, name) {
  await (await findRoom(page, name)).click();
  await page.getByTestId('chat-title').filter({ hasText: name }).waitFor();
  await waitFor('room live', async () => (await page.getByTestId('chat').getAttribute('data-live')) === 'true');
}

/** Texts of the chat messages shown (not join/leave, not pending). */
export async function chatTexts(page) {
  return page.$$eval('[data-testid="msg"][data-kind="chat"] [data-testid="msg-text"]', (els) => els.map((e) => e.textContent));
}

export async function seqs(page) {
  return page.$$eval('[data-testid="msg"]', (els) => els.map((e) => Number(e.getAttribute('data-seq'))));
}

export async function sendMessage(page, text) {
  const box = page.getByTestId('composer');
  await box.fill(text);
  await box.press('Enter');
}

/** Waits until the page shows exactly `expected` (in this order, each once). */
export async function expectChat(page, expected, what, timeoutMs = STEP_MS) {
  return waitFor(
    `${what}: ${expected.length} messages in order`,
    async () => {
      const got = await chatTexts(page);
      const s = await seqs(page);
      const sorted = s.every((v, i) => i === 0 || s[i - 1] < v);
      const pending = await page.getByTestId('pending').count();
      if (pending === 0 && sorted && JSON.stringify(got) === JSON.stringify(expected)) return true;
      return notYet({ got, pending, sorted });
    },
    timeoutMs,
  );
}

export async function shoot(page, dir, file) {
  mkdirSync(dir, { recursive: true });
  await page.screenshot({ path: join(dir, file), fullPage: false });
  log(`screenshot ${join(dir, file)}`);
}

const AXE_SOURCE = new URL('../node_modules/axe-core/axe.min.js', import.meta.url);

/** Run axe-core in the page (injected, WCAG 2.x A/AA rules); throws on serious or critical violations. */
export async function checkA11y(page, what) {
  if (!(await page.evaluate(() => typeof window.axe !== 'undefined'))) await page.addScriptTag({ path: fileURLToPath(AXE_SOURCE) });
  const violations = await page.evaluate(async () => {
    const result = await window.axe.run(document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice'] } });
    return result.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 3).map((n) => n.target.join(' ')) }));
  });
  const bad = violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  const minor = violations.filter((v) => !bad.includes(v)).map((v) => `${v.id} (${v.impact})`);
  log(`   axe ${what}: ${bad.length} serious/critical${minor.length ? `; minor: ${minor.join(', ')}` : ''}`);
  if (bad.length) throw new Error(`axe on ${what}: ${JSON.stringify(bad)}`);
}
