#!/usr/bin/env node
// End-to-end test of the web client in real headless Chromium against real chattrio nodes.
//
//   npm run test:e2e                 (from web/; the test stack must be up: CHATTRIO_STACK=test scripts/stack.sh up)
//   E2E_TARGET=mock npm run test:e2e (UI only, against e2e/mock-server.mjs: no cluster, no node kill)
//   E2E_TARGET=external E2E_NODES=http://h:1,http://h:2,http://h:3 npm run test:e2e (nodes already running; no node kill)
//
// It starts its own cluster (scripts/cluster.sh up 3 --base-port 18081 --lb-port 18080), always tears
// it down, bounds every step with a timeout and the whole run with E2E_DEADLINE_MS (default 180 s),
// and saves screenshots to <repo>/artifacts/screenshots/.
import { existsSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { spawn } from 'node:child_process';
import {
  STEP_MS,
  chatTexts,
  checkA11y,
  createRoom,
  expectChat,
  findRoom,
  launchBrowser,
  log,
  login,
  notYet,
  newUserPage,
  openRoom,
  run,
  sendMessage,
  shoot,
  sleep,
  status,
  waitFor,
} from './lib.mjs';

const WEB = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const REPO = resolve(WEB, '..');
const SHOTS = join(REPO, 'artifacts', 'screenshots');
const TARGET = process.env.E2E_TARGET ?? 'cluster';
const DEADLINE_MS = Number(process.env.E2E_DEADLINE_MS ?? 180000);
const BASE_PORT = Number(process.env.E2E_BASE_PORT ?? 18080); // nodes on BASE_PORT+1..3
const LB_PORT = Number(process.env.E2E_LB_PORT ?? 18080);
const STACK_ENV = {
  CHATTRIO_STACK: process.env.CHATTRIO_STACK ?? 'test',
  // The history step sends a burst of messages to fill pages, and the room-list step creates
  // rooms by the dozen: beyond a real user's rates (docs/security.md). The limits themselves are
  // tested in tests/test_limits.py.
  CHATTRIO_SEND_LIMIT_PER_CONNECTION: '1000:1000',
  CHATTRIO_SEND_LIMIT_PER_USER: '1000:1000',
  CHATTRIO_LIMIT_EXEMPT: '127.0.0.1,::1',
};

const tag = `${Date.now().toString(36).slice(-5)}${Math.floor(Math.random() * 1000)}`;
const results = [];
let teardowns = [];
let finished = false;

async function teardown() {
  const fns = teardowns.reverse();
  teardowns = [];
  for (const fn of fns) {
    try {
      await fn();
    } catch (e) {
      log('teardown error:', e.message);
    }
  }
}

/** The newest modification time of the files under `dir`. */
function newestMtime(dir) {
  return readdirSync(dir, { withFileTypes: true }).reduce((newest, entry) => {
    const path = join(dir, entry.name);
    return Math.max(newest, entry.isDirectory() ? newestMtime(path) : statSync(path).mtimeMs);
  }, 0);
}

/** The nodes serve web/dist: a build older than the sources would test old code. */
function distIsStale() {
  const built = join(WEB, 'dist', 'index.html');
  if (!existsSync(built)) return true;
  const sources = Math.max(newestMtime(join(WEB, 'src')), statSync(join(WEB, 'index.html')).mtimeMs);
  return statSync(built).mtimeMs < sources;
}

function summary() {
  const passed = results.filter((r) => r.ok).length;
  const failed = results.length - passed;
  console.log('');
  for (const r of results) console.log(`${r.ok ? 'ok  ' : 'FAIL'} ${r.name}${r.ok ? '' : `\n       ${r.error}`}`);
  console.log(`${passed} passed, ${failed} failed`);
  return failed;
}

async function step(name, fn, timeoutMs = STEP_MS * 3) {
  log(`-- ${name}`);
  const t0 = Date.now();
  let timer;
  try {
    await Promise.race([
      fn(),
      new Promise((_, rej) => {
        timer = setTimeout(() => rej(new Error(`step timed out after ${timeoutMs} ms`)), timeoutMs);
      }),
    ]);
    results.push({ name, ok: true });
    log(`   ok (${Date.now() - t0} ms)`);
    return true;
  } catch (e) {
    results.push({ name, ok: false, error: e.message.split('\n')[0].slice(0, 800) });
    log(`   FAILED: ${e.message}`);
    return false;
  } finally {
    clearTimeout(timer);
  }
}

const cluster = (...args) => run(join(REPO, 'scripts', 'cluster.sh'), args, { cwd: REPO, env: STACK_ENV, timeoutMs: 150000 });

async function startTarget() {
  if (TARGET === 'mock') {
    const port = 18180;
    const p = spawn(process.execPath, [join(WEB, 'e2e', 'mock-server.mjs'), String(port)], {
      stdio: 'inherit',
      env: { ...process.env, MOCK_FAIL_ONCE_WORD: 'FAILONCE' },
    });
    teardowns.push(async () => p.kill('SIGTERM'));
    await waitFor('mock server', async () => (await fetch(`http://127.0.0.1:${port}/api/room`).catch(() => null))?.ok, 10000);
    const url = `http://127.0.0.1:${port}`;
    return { nodes: [url, url, url], lb: url, canKill: false };
  }
  if (TARGET === 'external') {
    // nodes someone else runs (E2E_NODES=url1,url2,url3): every scenario but the node kills
    const nodes = (process.env.E2E_NODES ?? '').split(',').filter(Boolean);
    if (nodes.length !== 3) throw new Error('E2E_TARGET=external needs E2E_NODES=url1,url2,url3');
    return { nodes, lb: nodes[0], canKill: false };
  }
  if (!existsSync(join(REPO, 'scripts', 'cluster.sh'))) throw new Error('scripts/cluster.sh not found');
  if (distIsStale()) {
    log('web/dist missing or older than web/src: building');
    const b = await run('npm', ['run', 'build'], { cwd: WEB, timeoutMs: 120000 });
    if (b.code !== 0) throw new Error('npm run build failed');
  }
  await cluster('down');
  teardowns.push(async () => {
    log('cluster down');
    await cluster('down');
  });
  const up = await cluster('up', '3', '--base-port', String(BASE_PORT), '--lb-port', String(LB_PORT));
  if (up.code !== 0) throw new Error(`scripts/cluster.sh up failed (exit ${up.code})`);
  const nodes = [1, 2, 3].map((i) => `http://127.0.0.1:${BASE_PORT + i}`);
  return { nodes, lb: `http://127.0.0.1:${LB_PORT}`, canKill: true };
}

async function main() {
  setTimeout(async () => {
    if (finished) return;
    log(`whole run exceeded ${DEADLINE_MS} ms: stopping`);
    results.push({ name: 'deadline', ok: false, error: `run exceeded ${DEADLINE_MS} ms` });
    await teardown();
    summary();
    process.exit(1);
  }, DEADLINE_MS);

  let target;
  const started = await step('start nodes', async () => {
    target = await startTarget();
  }, 160000);
  if (!started) return;

  const { browser, close } = await launchBrowser();
  teardowns.push(close);

  const alice = `alice_${tag}`;
  const bob = `bob_${tag}`;
  const carol = `carol_${tag}`;
  const roomName = `e2e room ${tag}`;
  const expected = [];
  let killed = null;
  let A;
  let B;

  await step('login page: invalid id shows the server reason', async () => {
    A = await newUserPage(browser, { baseUrl: target.nodes[0], name: 'A' });
    await A.page.getByTestId('login-input').fill('bad id!');
    await A.page.getByTestId('login-submit').click();
    const msg = await waitFor('login error', async () => (await A.page.getByTestId('login-error').textContent())?.trim());
    log(`   server reason: ${JSON.stringify(msg)}`);
    await shoot(A.page, SHOTS, 'login-desktop.png');
  });

  const loggedIn = await step('two users log in on two different nodes', async () => {
    B = await newUserPage(browser, { baseUrl: target.nodes[1], name: 'B' });
    await Promise.all([login(A.page, alice), login(B.page, bob)]);
    const [sa, sb] = [await status(A.page), await status(B.page)];
    log(`   A on ${sa.nodeId}, B on ${sb.nodeId}`);
    if (target.canKill && (sa.nodeId !== 'node-1' || sb.nodeId !== 'node-2'))
      throw new Error(`expected node-1 / node-2, got ${sa.nodeId} / ${sb.nodeId}`);
    A.nodeId = sa.nodeId;
    B.nodeId = sb.nodeId;
    const urls = [...A.wsUrls, ...B.wsUrls];
    if (urls.length === 0 || urls.some((u) => new URL(u).searchParams.has('token')))
      throw new Error(`WebSocket URLs must carry no token (the cookie does): ${JSON.stringify(urls)}`);
  });
  if (!loggedIn) return;

  await step('a language switch keeps the connection (same session id)', async () => {
    const before = await status(A.page);
    if (!before.sessionId) throw new Error('no session id shown');
    await A.page.getByTestId('lang').selectOption('ko');
    await A.page.getByTestId('logout').filter({ hasText: '로그아웃' }).waitFor();
    await A.page.getByTestId('lang').selectOption('en');
    await A.page.getByTestId('logout').filter({ hasText: 'Log out' }).waitFor();
    const after = await status(A.page);
    if (after.status !== 'connected' || after.sessionId !== before.sessionId)
      throw new Error(`the connection was replaced: ${JSON.stringify([before, after])}`);
  });

  await step('a token the server refuses returns to the login screen with a message (no endless reconnects)', async () => {
    const X = await newUserPage(browser, { baseUrl: target.nodes[0], name: 'X' });
    await login(X.page, `xena_${tag}`);
    // the cookie the WebSocket carries goes bad: the handshake is refused with 401 (a browser sees 1006)
    await X.context.addCookies([{ name: 'chattrio_token', value: 'refused', url: target.nodes[0], httpOnly: true, sameSite: 'Lax' }]);
    await X.page.reload();
    await X.page.getByTestId('login-input').waitFor();
    await X.page.getByText(/Your session has expired/).waitFor();
    await X.context.close();
  });

  const roomOk = await step('a room created on one node appears live on the other (no reload)', async () => {
    await createRoom(A.page, roomName);
    await B.page.getByTestId('room-item').filter({ hasText: roomName }).waitFor({ timeout: STEP_MS });
  });
  if (!roomOk) return;

  const chatOk = await step('chat both ways: each message once, in order', async () => {
    await openRoom(B.page, roomName);
    await waitFor('A live', async () => (await A.page.getByTestId('chat').getAttribute('data-live')) === 'true');
    const turns = [
      [A, 'hello from alice 👋'],
      [B, 'hi alice, bob here'],
      [A, 'line one\nline two (shift+enter)'],
      [B, '<b>not bold</b> & <script>alert(1)</script>'],
    ];
    for (const [who, text] of turns) {
      if (text.includes('\n')) {
        const box = who.page.getByTestId('composer');
        const [l1, l2] = text.split('\n');
        await box.fill(l1);
        await box.press('Shift+Enter');
        await box.pressSequentially(l2);
        await box.press('Enter');
      } else {
        await sendMessage(who.page, text);
      }
      expected.push(text);
      await Promise.all([expectChat(A.page, expected, 'A'), expectChat(B.page, expected, 'B')]);
    }
    // a quick burst from both sides at once
    const burstA = ['a-1', 'a-2', 'a-3'];
    const burstB = ['b-1', 'b-2', 'b-3'];
    for (let i = 0; i < 3; i++) {
      await Promise.all([sendMessage(A.page, burstA[i]), sendMessage(B.page, burstB[i])]);
    }
    await waitFor('burst delivered', async () => (await chatTexts(A.page)).length === expected.length + 6 && (await chatTexts(B.page)).length === expected.length + 6);
    const [ta, tb] = [await chatTexts(A.page), await chatTexts(B.page)];
    if (JSON.stringify(ta) !== JSON.stringify(tb)) throw new Error(`A and B disagree on order: ${JSON.stringify([ta, tb])}`);
    const tail = ta.slice(expected.length);
    for (const seq of [burstA, burstB]) {
      const idx = seq.map((x) => tail.indexOf(x));
      if (idx.some((i) => i < 0) || !idx.every((v, i) => i === 0 || idx[i - 1] < v)) throw new Error(`burst out of order: ${tail}`);
    }
    expected.push(...tail);
    // the script tag is text, not HTML
    const html = await B.page.getByTestId('messages').innerHTML();
    if (html.includes('<script>') || html.includes('<b>')) throw new Error('message text rendered as HTML');
    // own on the right, others on the left with the sender id, system messages present
    const own = await A.page.locator('[data-testid="msg"].own').count();
    const other = await A.page.locator('[data-testid="msg"].other .sender').count();
    const joins = await B.page.locator('[data-testid="msg"][data-kind="join"]').count();
    if (!own || !other || !joins) throw new Error(`layout classes missing: own=${own} other=${other} joins=${joins}`);
  });
  if (!chatOk) return;

  await step('reload mid-conversation shows the whole history', async () => {
    await B.page.reload();
    await B.page.getByTestId('chat-title').filter({ hasText: roomName }).waitFor();
    await expectChat(B.page, expected, 'B after reload');
    await sendMessage(B.page, 'back after reload');
    expected.push('back after reload');
    await Promise.all([expectChat(A.page, expected, 'A'), expectChat(B.page, expected, 'B')]);
  });

  await step('screenshots: room list and chat at desktop and 360 px', async () => {
    await shoot(A.page, SHOTS, 'chat-desktop.png');
    const P = await newUserPage(browser, { baseUrl: target.nodes[2], name: 'P', viewport: { width: 360, height: 740 } });
    await shoot(P.page, SHOTS, 'login-360.png');
    await login(P.page, alice);
    await shoot(P.page, SHOTS, 'rooms-360.png');
    await openRoom(P.page, roomName);
    await expectChat(P.page, expected, 'phone');
    await shoot(P.page, SHOTS, 'chat-360.png');
    await P.page.getByTestId('lang').selectOption('ko');
    await P.page.getByTestId('members-toggle').click();
    await P.page.getByTestId('member').first().waitFor();
    await shoot(P.page, SHOTS, 'chat-360-ko-members.png');
    await P.page.getByTestId('lang').selectOption('en');
    await P.context.close();
    const H = await newUserPage(browser, { baseUrl: target.nodes[0], name: 'H' });
    await login(H.page, `dave_${tag}`);
    await findRoom(H.page, roomName);
    await shoot(H.page, SHOTS, 'rooms-desktop.png');
    await H.context.close();
  });

  await step('keyboard only: log in, create a room (with a validation error), send a message', async () => {
    const K = await newUserPage(browser, { baseUrl: target.nodes[2], name: 'K' });
    const kb = K.page.keyboard;
    const active = () => K.page.evaluate(() => document.activeElement?.getAttribute('data-testid') ?? document.activeElement?.tagName);
    const tabTo = async (testId) => {
      for (let i = 0; i < 25; i++) {
        if ((await active()) === testId) return;
        await kb.press('Tab');
      }
      throw new Error(`Tab never reached ${testId}`);
    };
    if ((await active()) !== 'login-input') throw new Error(`login field not focused: ${await active()}`);
    await kb.type(`kim_${tag}`);
    await kb.press('Enter');
    await K.page.getByTestId('new-room').waitFor();
    await tabTo('new-room');
    await kb.press('Enter');
    await K.page.getByTestId('create-room-dialog').waitFor();
    if ((await active()) !== 'new-room-name') throw new Error(`dialog field not focused: ${await active()}`);
    await kb.press('Enter'); // empty name: refused with a message, nothing sent
    const err = await waitFor('name error', async () => (await K.page.getByTestId('new-room-error').textContent())?.trim());
    log(`   empty-name error: ${JSON.stringify(err)}`);
    await kb.press('Escape');
    await K.page.getByTestId('create-room-dialog').waitFor({ state: 'detached' });
    if ((await active()) !== 'new-room') throw new Error(`focus not returned to the button: ${await active()}`);
    await kb.press('Enter');
    await K.page.getByTestId('new-room-name').waitFor();
    const kroom = `keyboard ${tag}`;
    await kb.type(kroom);
    await kb.press('Enter');
    await K.page.getByTestId('chat-title').filter({ hasText: kroom }).waitFor();
    await waitFor('composer focused', async () => (await active()) === 'composer');
    await waitFor('room live', async () => (await K.page.getByTestId('chat').getAttribute('data-live')) === 'true');
    await kb.type('typed without a mouse');
    await kb.press('Enter');
    await expectChat(K.page, ['typed without a mouse'], 'K');
    await K.context.close();
  });

  await step('scrolling to the top loads older pages (before = lowest seq)', async () => {
    const N = 130;
    const pagingRoom = `paging ${tag}`;
    await createRoom(A.page, pagingRoom);
    const roomId = Number(/\/room\/(\d+)/.exec(A.page.url())?.[1]);
    // a burst straight over a second WebSocket of the same user
    const acked = await A.page.evaluate(
      async ({ roomId, n }) => {
        // authenticated by the page's HttpOnly cookie, as the web client is: no token in the URL
        const ws = new WebSocket(`${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`);
        const frames = [];
        let wake = () => {};
        ws.onmessage = (e) => {
          frames.push(JSON.parse(e.data));
          wake();
        };
        const until = async (pred, ms) => {
          const end = Date.now() + ms;
          while (!pred()) {
            if (Date.now() > end) throw new Error(`burst: timed out; frames ${JSON.stringify(frames.slice(-3))}`);
            await new Promise((r) => {
              wake = r;
              setTimeout(r, 200);
            });
          }
        };
        await new Promise((res, rej) => {
          ws.onopen = res;
          ws.onerror = () => rej(new Error('burst socket failed'));
        });
        ws.send(JSON.stringify({ type: 'SUBSCRIBE', destination: `/topic/message/${roomId}`, ref: 's' }));
        await until(() => frames.some((f) => f.type === 'SUBSCRIBED'), 10000);
        for (let i = 1; i <= n; i++) ws.send(JSON.stringify({ type: 'SEND', roomId, text: `page msg ${i}`, clientMsgId: `burst-${i}`, ref: `b${i}` }));
        await until(() => frames.filter((f) => f.type === 'ACK' || f.type === 'ERROR').length >= n, 30000);
        ws.close();
        return frames.filter((f) => f.type === 'ACK').length;
      },
      { roomId, n: N },
    );
    if (acked !== N) throw new Error(`only ${acked}/${N} burst messages acknowledged`);
    const want = Array.from({ length: N }, (_, i) => `page msg ${i + 1}`);
    const R = await newUserPage(browser, { baseUrl: target.nodes[1], name: 'R', viewport: { width: 800, height: 600 } });
    await login(R.page, `erin_${tag}`);
    await openRoom(R.page, pagingRoom);
    const first = await waitFor('first page', async () => {
      const t = await chatTexts(R.page);
      return t.length >= 50 && t.at(-1) === want.at(-1) ? t : null;
    });
    if (first.length >= N) throw new Error(`expected one page first, got ${first.length}`);
    // one scroll to the top loads one older page and keeps the message that was on top in view
    const topId = await R.page.locator('[data-testid="msg"]').first().getAttribute('data-id');
    await R.page.getByTestId('scroller').evaluate((el) => {
      el.scrollTop = 0;
      el.dispatchEvent(new Event('scroll'));
    });
    await waitFor('one older page', async () => (await chatTexts(R.page)).length > first.length);
    const kept = await R.page.evaluate((id) => {
      const sc = document.querySelector('[data-testid="scroller"]').getBoundingClientRect();
      const r = document.querySelector(`[data-id="${id}"]`).getBoundingClientRect();
      return r.bottom > sc.top && r.top < sc.bottom;
    }, topId);
    if (!kept) throw new Error('loading an older page moved the previous top message out of view');
    await waitFor(
      'all pages after scrolling up',
      async () => {
        await R.page.getByTestId('scroller').evaluate((el) => {
          el.scrollTop = 0;
          el.dispatchEvent(new Event('scroll'));
        });
        const t = await chatTexts(R.page);
        return JSON.stringify(t) === JSON.stringify(want) ? true : notYet({ n: t.length, first: t[0] });
      },
      STEP_MS,
      400,
    );
    // scrolled up, a new message shows a "New messages" button instead of yanking the view
    await waitFor('A live in the paging room', async () => (await A.page.getByTestId('chat').getAttribute('data-live')) === 'true');
    const topBefore = await R.page.getByTestId('scroller').evaluate((el) => el.scrollTop);
    await sendMessage(A.page, 'fresh one');
    await R.page.getByTestId('jump-newest').waitFor();
    const top = await R.page.getByTestId('scroller').evaluate((el) => el.scrollTop);
    if (Math.abs(top - topBefore) > 5) throw new Error(`view moved from ${topBefore} to ${top} on a new message while reading old ones`);
    await R.page.getByTestId('jump-newest').click();
    await waitFor('at the bottom', () =>
      R.page.getByTestId('scroller').evaluate((el) => el.scrollHeight - el.scrollTop - el.clientHeight < 5),
    );
    await R.context.close();
    // A goes back to the conversation for the next steps
    await openRoom(A.page, roomName);
    await expectChat(A.page, expected, 'A back in the first room');
  });

  await step('room list: pages of 50 load on scroll, the search narrows it, entered rooms come first', async () => {
    const prefix = `list ${tag}`;
    // 55 rooms newer than every room A entered, created over REST with A's token
    const created = await A.page.evaluate(async (prefix) => {
      const { token } = JSON.parse(sessionStorage.getItem('chattrio.session'));
      const ids = [];
      for (let k = 0; k < 55; k++) {
        const res = await fetch('/api/room', {
          method: 'POST',
          headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${token}` },
          body: JSON.stringify({ name: `${prefix} ${k}` }),
        });
        ids.push((await res.json()).data.id);
      }
      return ids;
    }, prefix);
    const list = A.page.getByTestId('room-list');
    const shownIds = () => A.page.$$eval('[data-testid="room-item"]', (els) => els.map((e) => Number(e.getAttribute('data-room-id'))));
    await A.page.getByTestId('room-search').fill(prefix);
    await waitFor('first page of the search', async () => {
      const ids = await shownIds();
      const answered = (await list.getAttribute('data-search')) === prefix; // the server's page, not rows held before
      return answered && ids.length === 50 && (await list.getAttribute('data-has-more')) === 'true' ? true : notYet({ n: ids.length, answered });
    });
    await A.page.locator('.rooms-pane').evaluate((el) => el.scrollTo(0, el.scrollHeight));
    await waitFor('second page on scroll', async () => {
      const ids = await shownIds();
      return ids.length === 55 && (await list.getAttribute('data-has-more')) === 'false' ? true : notYet({ n: ids.length });
    });
    const ids = await shownIds();
    const want = [...created].sort((a, b) => b - a);
    if (JSON.stringify(ids) !== JSON.stringify(want)) throw new Error(`not each room once, newest first: ${JSON.stringify(ids)}`);
    await A.page.getByTestId('room-search').fill('');
    const current = Number(/\/room\/(\d+)/.exec(A.page.url())?.[1]);
    await waitFor('entered room first', async () => {
      const first = (await shownIds())[0];
      return first === current ? true : notYet({ first, current });
    });
  });

  if (TARGET !== 'mock') {
    await step('axe-core: login, room list and chat at 360 and 1280 px, in English and Korean', async () => {
      for (const width of [360, 1280]) {
        const Y = await newUserPage(browser, { baseUrl: target.nodes[width === 360 ? 2 : 0], name: `Y${width}`, viewport: { width, height: width === 360 ? 740 : 800 } });
        const bothLanguages = async (screen) => {
          for (const lang of ['en', 'ko']) {
            await Y.page.getByTestId('lang').selectOption(lang);
            await waitFor(`html lang ${lang}`, async () => (await Y.page.getAttribute('html', 'lang')) === lang);
            await checkA11y(Y.page, `${screen} ${width}px ${lang}`);
          }
        };
        await bothLanguages('login');
        await Y.page.getByTestId('lang').selectOption('en');
        await login(Y.page, `yuna${width}_${tag}`);
        await findRoom(Y.page, roomName);
        await bothLanguages('room list');
        await Y.page.getByTestId('lang').selectOption('en');
        await openRoom(Y.page, roomName);
        await bothLanguages('chat');
        await Y.context.close();
      }
    }, STEP_MS * 15);

    await step('two devices of one user: reading on one clears the unread badge on the other', async () => {
      // alice's second device, on another node, at the room list
      const A2 = await newUserPage(browser, { baseUrl: target.nodes[2], name: 'A2' });
      await login(A2.page, alice);
      // alice has read the conversation (at the bottom of a visible tab) and leaves it; bob writes on
      await openRoom(A.page, `paging ${tag}`);
      for (const text of ['unread one', 'unread two']) {
        await sendMessage(B.page, text);
        expected.push(text);
      }
      await expectChat(B.page, expected, 'B');
      const badgeOn = (P) => P.page.getByTestId('room-item').filter({ hasText: roomName }).getByTestId('unread-badge');
      // the list polls every 10 s; the count is taken from stored messages
      await findRoom(A2.page, roomName);
      await waitFor('badge "2" on the second device', async () => {
        const n = await badgeOn(A2).getAttribute('data-unread', { timeout: 500 }).catch(() => null);
        return n === '2' ? true : notYet({ n });
      }, 30000, 300);
      await shoot(A2.page, SHOTS, 'rooms-unread-badge-desktop.png');
      // alice opens it on the first device: the divider marks where she stopped
      await openRoom(A.page, roomName);
      await expectChat(A.page, expected, 'A back in the room');
      const divided = await A.page.getByTestId('unread-divider').locator('xpath=following-sibling::li[1]').getByTestId('msg-text').textContent();
      if (divided !== 'unread one') throw new Error(`the divider is before ${JSON.stringify(divided)}, not the first unread message`);
      await shoot(A.page, SHOTS, 'chat-unread-divider-desktop.png');
      await waitFor('badge gone on the second device', async () => ((await badgeOn(A2).count()) === 0 ? true : notYet('badge still shown')), 5000, 100);
      await A2.context.close();
    });

    await step('typing on one node shows "… is typing" on another, until the message arrives', async () => {
      await waitFor('A live', async () => (await A.page.getByTestId('chat').getAttribute('data-live')) === 'true');
      await waitFor('B live', async () => (await B.page.getByTestId('chat').getAttribute('data-live')) === 'true');
      await A.page.getByTestId('composer').pressSequentially('still typ', { delay: 30 });
      const line = B.page.getByTestId('typing');
      await waitFor('typing shown on B', async () => ((await line.textContent()) === `${alice} is typing…` ? true : notYet(await line.textContent())));
      await shoot(B.page, SHOTS, 'chat-typing-desktop.png');
      await A.page.getByTestId('composer').pressSequentially('ing, sent', { delay: 10 });
      await A.page.getByTestId('composer').press('Enter');
      expected.push('still typing, sent');
      await expectChat(B.page, expected, 'B');
      await waitFor('typing gone on B', async () => ((await line.textContent()) === '' ? true : notYet(await line.textContent())), 2000, 50);
    });
  }

  if (TARGET === 'mock') {
    // the mock node answers ERROR UNAVAILABLE to the first try of a text containing FAILONCE
    await step('mock only: ERROR marks a message failed; Retry sends it again, once', async () => {
      await sendMessage(A.page, 'FAILONCE please');
      const failed = A.page.locator('[data-testid="pending"][data-status="failed"]');
      await failed.waitFor();
      await shoot(A.page, SHOTS, 'chat-failed-desktop.png');
      await failed.getByTestId('retry').click();
      expected.push('FAILONCE please');
      await Promise.all([expectChat(A.page, expected, 'A'), expectChat(B.page, expected, 'B')]);
    });
  }
  if (!target.canKill) {
    log(`${TARGET} target: skipping the node-kill scenario`);
    return;
  }

  await step('through the LB: the node holding the WebSocket dies, the page reconnects and catches up', async () => {
    const C = await newUserPage(browser, { baseUrl: target.lb, name: 'C' });
    await login(C.page, carol);
    await openRoom(C.page, roomName);
    await expectChat(C.page, expected, 'C before kill');
    const { nodeId } = await status(C.page);
    const idx = Number(/(\d+)$/.exec(nodeId ?? '')?.[1]);
    if (!(idx >= 1 && idx <= 3)) throw new Error(`cannot tell the node from nodeId ${JSON.stringify(nodeId)}`);
    const sender = A.nodeId !== nodeId ? A : B;
    log(`   C is on ${nodeId}; killing it while ${sender.name} (on ${sender.nodeId}) keeps talking`);
    // record every status change of C (the drop and reconnect can take well under a second)
    await C.page.evaluate(() => {
      const el = document.querySelector('[data-testid="conn-status"]');
      window.__statusLog = [];
      new MutationObserver(() => window.__statusLog.push(`${el.dataset.status}@${el.dataset.nodeId}`)).observe(el, { attributes: true });
    });
    // the other user sends a steady stream before, during and after the outage
    const talking = (async () => {
      for (let i = 1; i <= 12; i++) {
        const text = `during failover #${i}`;
        await sendMessage(sender.page, text);
        expected.push(text);
        await sleep(250);
      }
    })();
    await sleep(600);
    const k = await cluster('kill', String(idx));
    if (k.code !== 0) throw new Error(`cluster.sh kill ${idx} failed`);
    await talking;
    await expectChat(sender.page, expected, `${sender.name} own messages`);
    const after = await waitFor(
      'C reconnected to a surviving node',
      async () => {
        const s = await status(C.page);
        return s.status === 'connected' && s.nodeId && s.nodeId !== nodeId ? s : null;
      },
      45000,
    );
    const statusLog = await C.page.evaluate(() => window.__statusLog);
    log(`   C reconnected to ${after.nodeId}; status changes: ${statusLog.join(' ')}`);
    if (!statusLog.some((x) => !x.startsWith('connected'))) throw new Error(`C never showed a non-connected status: ${statusLog}`);
    await expectChat(C.page, expected, 'C after reconnect', 30000);
    // and it is live again: one more message both ways
    await sendMessage(C.page, 'carol is back');
    expected.push('carol is back');
    await Promise.all([expectChat(C.page, expected, 'C'), expectChat(sender.page, expected, sender.name)]);
    await shoot(C.page, SHOTS, 'chat-after-failover-desktop.png');
    killed = { idx, sender };
  }, 150000);

  if (killed) {
    await step('a page on a node that is down for seconds resumes when it is back: no gap, no duplicate', async () => {
      const { idx, sender } = killed;
      const st = await cluster('start', String(idx));
      if (st.code !== 0) throw new Error(`cluster.sh start ${idx} failed`);
      const D = await newUserPage(browser, { baseUrl: target.nodes[idx - 1], name: 'D' });
      await login(D.page, `dana_${tag}`);
      await openRoom(D.page, roomName);
      await expectChat(D.page, expected, 'D before the outage');
      const k = await cluster('kill', String(idx));
      if (k.code !== 0) throw new Error(`cluster.sh kill ${idx} failed`);
      await waitFor('D sees the outage', async () => (await status(D.page)).status !== 'connected', 10000, 50);
      for (let i = 1; i <= 8; i++) {
        const text = `while node-${idx} is away #${i}`;
        await sendMessage(sender.page, text);
        expected.push(text);
        await sleep(400);
      }
      await expectChat(sender.page, expected, `${sender.name} own messages`);
      const down = await status(D.page);
      log(`   D status while its node is down: ${down.status}`);
      const st2 = await cluster('start', String(idx));
      if (st2.code !== 0) throw new Error(`cluster.sh start ${idx} failed`);
      await waitFor('D reconnected', async () => (await status(D.page)).status === 'connected', 30000);
      await expectChat(D.page, expected, 'D after the outage', 20000);
      await D.context.close();
    }, 90000);
  }
}

main()
  .catch((e) => {
    results.push({ name: 'harness', ok: false, error: e.stack ?? String(e) });
  })
  .finally(async () => {
    finished = true;
    await teardown();
    const failed = summary();
    process.exit(failed ? 1 : 0);
  });
