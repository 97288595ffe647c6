'use strict';
// The usual Node.js Paddle webhook handler, as Paddle's docs and SDK README
// show it, for `make bench` to compare paddlehook against:
//   node:http server, one process per core (node:cluster),
//   paddle.webhooks.unmarshal(rawBody, secret, signature) from the official
//   SDK (@paddle/paddle-node-sdk) to verify and parse,
//   node-postgres (pg.Pool, default size 10 per process) calling the same
//   SQL function as paddlehook as a named (prepared) statement.
//
// Environment:
//   PEER_PORT        TCP port on 127.0.0.1 (required)
//   PEER_SECRET      the endpoint secret (pdl_ntfset_...)
//   PEER_DB          libpq-style connection string for pg
//   PEER_ENDPOINT    endpoint id stored with each event
//   PEER_TOLERANCE   seconds a signature ts may lie in the past (default 5, the
//                    SDK's own; the bench raises it like paddlehook's --tolerance
//                    because the notifications are signed before the run)
//   PEER_WORKERS     processes (default: available cores)
//   PEER_POOL        pg pool size per process (default 10, pg's default)
//   PEER_READY_FILE  written by the primary once every worker listens

const cluster = require('node:cluster');
const fs = require('node:fs');
const http = require('node:http');
const os = require('node:os');

const workers = Number(process.env.PEER_WORKERS || os.availableParallelism());

if (cluster.isPrimary) {
  let listening = 0;
  for (let i = 0; i < workers; i++) cluster.fork();
  cluster.on('listening', () => {
    listening += 1;
    if (listening === workers && process.env.PEER_READY_FILE) {
      fs.writeFileSync(process.env.PEER_READY_FILE, String(process.pid));
    }
  });
  cluster.on('exit', (w, code, signal) => {
    console.error(`worker ${w.process.pid} exited (${signal || code})`);
  });
  const stop = () => {
    for (const id in cluster.workers) cluster.workers[id].process.kill('SIGTERM');
    setTimeout(() => process.exit(0), 2000).unref();
    cluster.disconnect(() => process.exit(0));
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
} else {
  const { Paddle, Environment, LogLevel, WebhooksValidator } = require('@paddle/paddle-node-sdk');
  const { Pool } = require('pg');

  // The SDK rejects a ts older than WebhooksValidator.MAX_VALID_TIME_DIFFERENCE
  // seconds (5) before computing the HMAC; keep the HMAC on the hot path.
  WebhooksValidator.MAX_VALID_TIME_DIFFERENCE = Number(process.env.PEER_TOLERANCE || 5);

  const paddle = new Paddle('pdl_sdbx_apikey_bench_unused', {
    environment: Environment.sandbox,
    logLevel: LogLevel.error,
  });
  const secret = process.env.PEER_SECRET;
  const endpointId = process.env.PEER_ENDPOINT || 'ep_node_peer';
  const pool = new Pool({
    connectionString: process.env.PEER_DB,
    max: Number(process.env.PEER_POOL || 10),
  });
  pool.on('error', (err) => console.error('pg pool error', err.message));

  const INGEST = 'SELECT paddle.ingest_event($1, $2, $3::timestamptz, $4, $5, $6, $7::jsonb) AS r';

  const reply = (res, status, obj) => {
    const body = JSON.stringify(obj);
    res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
    res.end(body);
  };

  const server = http.createServer((req, res) => {
    if (req.method !== 'POST' || !req.url.startsWith('/paddle/webhooks/')) {
      reply(res, 404, { error: 'not_found', message: 'no such path' });
      return;
    }
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', async () => {
      const raw = Buffer.concat(chunks).toString('utf8');
      const signature = req.headers['paddle-signature'] || '';
      let event;
      try {
        event = await paddle.webhooks.unmarshal(raw, secret, signature);
      } catch (err) {
        reply(res, 401, { error: 'invalid_signature', message: err.message });
        return;
      }
      try {
        const r = await pool.query({
          name: 'paddlehook_ingest',
          text: INGEST,
          values: [event.eventId, event.eventType, event.occurredAt, event.notificationId || null,
            endpointId, 'sandbox', raw],
        });
        reply(res, 200, { status: r.rows[0].r });
      } catch (err) {
        console.error('ingest failed:', err.message);
        reply(res, 503, { error: 'database_unavailable', message: 'retry later' });
      }
    });
  });
  server.keepAliveTimeout = 65000;
  server.listen(Number(process.env.PEER_PORT), '127.0.0.1');
  process.on('SIGTERM', () => {
    server.close();
    pool.end().finally(() => process.exit(0));
    setTimeout(() => process.exit(0), 1500).unref();
  });
}
