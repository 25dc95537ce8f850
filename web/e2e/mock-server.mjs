#!/usr/bin/env node
// In-memory stand-in for a chattrio node (docs/protocol.md), for UI development and screenshots
// without the real stack: serves web/dist (SPA fallback), the REST API and /ws.
// Not a test of the server. Usage: node e2e/mock-server.mjs [port]   (default 5180)
import { createServer } from 'node:http';
import { readFile } from 'node:fs/promises';
import { extname, join, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomUUID } from 'node:crypto';
import { WebSocketServer } from 'ws';

const DIST = fileURLToPath(new URL('../dist/', import.meta.url));
const NODE_ID = process.env.MOCK_NODE_ID ?? 'mock-1';

const users = new Set();
const rooms = []; // {id,name,createdBy,createdAt}
const messages = new Map(); // roomId -> [msg]
const presence = new Map(); // roomId -> Map(userId -> count)
let offset = 100;
const sockets = new Set();
const failedOnce = new Set();

const ok = (res, status, data, message = 'ok') => json(res, status, { success: true, message, data });
const fail = (res, status, message) => json(res, status, { success: false, message, data: null });
function json(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}
const validUser = (id) => /^[\p{L}\p{N}_.-]{1,32}$/u.test(id.normalize('NFC'));
const tokenUser = (t) => (t && t.startsWith('tok.') ? decodeURIComponent(t.slice(4)) : null);
const cookieToken = (req) => /(?:^|;\s*)chattrio_token=([^;]*)/.exec(req.headers.cookie ?? '')?.[1] ?? null;
const roomView = (r) => ({ ...r, memberCount: presence.get(r.id)?.size ?? 0 });

function publish(roomId, senderId, kind, text, clientMsgId) {
  const list = messages.get(roomId) ?? [];
  if (clientMsgId) {
    const dup = list.find((m) => m.senderId === senderId && m.clientMsgId === clientMsgId);
    if (dup) return dup;
  }
  offset += 1 + Math.floor(Math.random() * 3); // not contiguous, like Kafka offsets shared by rooms
  const msg = { id: randomUUID(), roomId, seq: offset, senderId, kind, text, clientMsgId: clientMsgId ?? null, sentAt: Date.now() };
  list.push(msg);
  messages.set(roomId, list);
  for (const s of sockets) if (s.rooms.has(roomId)) s.sendJson({ type: 'ROOM_MESSAGE', message: msg });
  return msg;
}

async function body(req) {
  let b = '';
  for await (const c of req) b += c;
  try {
    return JSON.parse(b || 'null');
  } catch {
    return undefined;
  }
}

/** GET /api/room: newest first, `q` a case-insensitive substring, `cursor` the last id of the previous page. */
function roomPage(params) {
  const limit = Math.min(200, Math.max(1, Number(params.get('limit') ?? 50)));
  const below = params.has('cursor') ? Number(params.get('cursor')) : Infinity;
  const q = (params.get('q') ?? '').trim().toLowerCase();
  const matching = rooms.filter((r) => r.id < below && r.name.toLowerCase().includes(q)).sort((a, b) => b.id - a.id);
  const page = matching.slice(0, limit);
  const hasMore = matching.length > limit;
  return { rooms: page.map(roomView), nextCursor: hasMore ? String(page[page.length - 1].id) : null, hasMore };
}

const server = createServer(async (req, res) => {
  const url = new URL(req.url, 'http://x');
  const p = url.pathname;
  let m;
  if ((m = /^\/api\/user\/enter\/(.+)$/.exec(p)) && req.method === 'POST') {
    const id = decodeURIComponent(m[1]).normalize('NFC');
    if (!validUser(id)) return fail(res, 400, `invalid user id: only letters, digits, _ - . and at most 32 characters`);
    const created = !users.has(id);
    users.add(id);
    const token = `tok.${encodeURIComponent(id)}`;
    res.setHeader('set-cookie', `chattrio_token=${token}; Path=/; HttpOnly; SameSite=Lax; Max-Age=86400`);
    return ok(res, created ? 201 : 200, { userId: id, token, expiresAt: Math.floor(Date.now() / 1000) + 86400, created });
  }
  if (p === '/api/auth' && req.method === 'GET') return ok(res, 200, { mode: 'open' });
  if (p === '/api/auth/session' && req.method === 'DELETE') {
    res.setHeader('set-cookie', 'chattrio_token=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0');
    return ok(res, 200, null);
  }
  if (p === '/api/room' && req.method === 'GET') return ok(res, 200, roomPage(url.searchParams));
  if (p === '/api/me' && req.method === 'GET') {
    const user = tokenUser(cookieToken(req));
    return user ? ok(res, 200, { userId: user, expiresAt: Math.floor(Date.now() / 1000) + 86400 }) : fail(res, 401, 'log in first: no token');
  }
  if (p === '/api/room' && req.method === 'POST') {
    const user = tokenUser((req.headers.authorization ?? '').replace(/^Bearer /, ''));
    if (!user) return fail(res, 401, 'token required');
    const b = await body(req);
    const name = typeof b?.name === 'string' ? b.name.trim() : '';
    if (!name || [...name].length > 100) return fail(res, 400, 'room name must be 1-100 characters');
    const room = { id: rooms.length + 1, name, createdBy: user, createdAt: new Date().toISOString() };
    rooms.push(room);
    for (const s of sockets) if (s.watchRooms) s.sendJson({ type: 'ROOM_CREATED', room: roomView(room) });
    return ok(res, 201, roomView(room));
  }
  if ((m = /^\/api\/room\/(\d+)(\/messages|\/members)?$/.exec(p)) && req.method === 'GET') {
    const room = rooms.find((r) => r.id === Number(m[1]));
    if (!room) return fail(res, 404, 'no such room');
    if (!m[2]) return ok(res, 200, roomView(room));
    if (m[2] === '/members') return ok(res, 200, { roomId: room.id, members: [...(presence.get(room.id)?.keys() ?? [])] });
    const limit = Math.min(100, Math.max(1, Number(url.searchParams.get('limit') ?? 50)));
    const before = url.searchParams.has('before') ? Number(url.searchParams.get('before')) : Infinity;
    const list = (messages.get(room.id) ?? []).filter((x) => x.seq < before);
    return ok(res, 200, list.slice(-limit).reverse());
  }
  if (p.startsWith('/api/')) return fail(res, 404, 'no such path');
  // static + SPA fallback
  const file = normalize(join(DIST, p === '/' ? 'index.html' : p));
  const types = { '.html': 'text/html', '.js': 'text/javascript', '.css': 'text/css', '.svg': 'image/svg+xml' };
  try {
    if (!file.startsWith(DIST)) throw new Error('outside');
    const data = await readFile(file);
    res.writeHead(200, { 'content-type': types[extname(file)] ?? 'application/octet-stream' });
    res.end(data);
  } catch {
    const data = await readFile(join(DIST, 'index.html'));
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end(data);
  }
});

const wss = new WebSocketServer({ noServer: true });
server.on('upgrade', (req, socket, head) => {
  const url = new URL(req.url, 'http://x');
  const user = tokenUser(cookieToken(req));
  if (url.pathname !== '/ws' || !user) {
    socket.end('HTTP/1.1 401 Unauthorized\r\n\r\n');
    return;
  }
  wss.handleUpgrade(req, socket, head, (ws) => {
    const s = { ws, user, rooms: new Set(), watchRooms: false, sendJson: (f) => ws.send(JSON.stringify(f)) };
    sockets.add(s);
    s.sendJson({ type: 'session-info', sessionId: randomUUID(), userId: user, nodeId: NODE_ID });
    ws.on('message', (data) => {
      let f;
      try {
        f = JSON.parse(String(data));
      } catch {
        return s.sendJson({ type: 'ERROR', code: 'BAD_FRAME', message: 'not JSON' });
      }
      const ref = f.ref;
      if (f.type === 'PING') return s.sendJson({ type: 'PONG', ref });
      if (f.type === 'SUBSCRIBE' && f.destination === '/topic/rooms') {
        s.watchRooms = true;
        return s.sendJson({ type: 'SUBSCRIBED', ref, destination: f.destination, lastSeq: null });
      }
      const rm = /^\/topic\/message\/(\d+)$/.exec(f.destination ?? '');
      if (f.type === 'SUBSCRIBE' && rm) {
        const roomId = Number(rm[1]);
        if (!rooms.some((r) => r.id === roomId)) return s.sendJson({ type: 'ERROR', code: 'NO_SUCH_ROOM', message: `no room ${roomId}`, ref });
        const list = messages.get(roomId) ?? [];
        if (typeof f.since === 'number') for (const x of list) if (x.seq > f.since) s.sendJson({ type: 'ROOM_MESSAGE', message: x });
        s.rooms.add(roomId);
        const pres = presence.get(roomId) ?? new Map();
        presence.set(roomId, pres);
        const had = pres.get(user) ?? 0;
        pres.set(user, had + 1);
        s.sendJson({ type: 'SUBSCRIBED', ref, destination: f.destination, lastSeq: list.at(-1)?.seq ?? null });
        if (!had) publish(roomId, user, 'join', '', null);
        return;
      }
      if (f.type === 'UNSUBSCRIBE' && rm) {
        leave(s, Number(rm[1]));
        return s.sendJson({ type: 'UNSUBSCRIBED', ref, destination: f.destination });
      }
      if (f.type === 'SEND') {
        if (!s.rooms.has(f.roomId)) return s.sendJson({ type: 'ERROR', code: 'NOT_SUBSCRIBED', message: `enter room ${f.roomId} before sending to it`, ref });
        if (typeof f.text !== 'string' || !f.text.trim() || [...f.text].length > 4000) return s.sendJson({ type: 'ERROR', code: 'BAD_TEXT', message: 'text must be 1-4000 characters', ref });
        // a text containing MOCK_FAIL_ONCE_WORD fails with UNAVAILABLE on the first try of each clientMsgId
        const word = process.env.MOCK_FAIL_ONCE_WORD;
        if (word && f.text.includes(word) && !failedOnce.has(f.clientMsgId) && failedOnce.add(f.clientMsgId)) return s.sendJson({ type: 'ERROR', code: 'UNAVAILABLE', message: 'Kafka did not acknowledge in time', ref });
        const msg = publish(f.roomId, user, 'chat', f.text, f.clientMsgId);
        return s.sendJson({ type: 'ACK', ref, clientMsgId: f.clientMsgId ?? null, id: msg.id, roomId: f.roomId, seq: msg.seq });
      }
      s.sendJson({ type: 'ERROR', code: 'UNKNOWN_TYPE', message: `unknown type ${f.type}`, ref });
    });
    ws.on('close', () => {
      sockets.delete(s);
      for (const r of [...s.rooms]) leave(s, r);
    });
  });
});

function leave(s, roomId) {
  if (!s.rooms.delete(roomId)) return;
  const pres = presence.get(roomId);
  const n = (pres?.get(s.user) ?? 1) - 1;
  if (n > 0) pres.set(s.user, n);
  else {
    pres?.delete(s.user);
    publish(roomId, s.user, 'leave', '', null);
  }
}

const port = Number(process.argv[2] ?? 5180);
server.listen(port, '127.0.0.1', () => console.log(`mock chattrio node on http://127.0.0.1:${port}`));
