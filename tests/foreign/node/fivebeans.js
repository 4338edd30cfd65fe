// The scenario of tests/test_foreign_clients.py through fivebeans' public API.
// Usage: node fivebeans.js HOST PORT TUBE. Prints one JSON object a line; the test compares them.
'use strict';
const crypto = require('crypto');
const fivebeans = require('fivebeans');

const [host, port, name] = process.argv.slice(2);
const TEXT = 'héllo wörld ✓ 日本';
const BINARY = Buffer.concat([Buffer.from([...Array(256).keys()]), Buffer.from(TEXT)]);
const LARGE = 'beanq '.repeat(10000);
const JOB_KEYS = ['tube', 'state', 'pri', 'delay', 'ttr', 'reserves', 'releases', 'buries', 'kicks'];
const TUBE_KEYS = [
  'name', 'current-jobs-ready', 'current-jobs-delayed', 'current-jobs-buried',
  'current-jobs-reserved', 'total-jobs', 'current-using', 'current-watching', 'cmd-delete',
  'cmd-pause-tube', 'pause',
];

const emit = (step, fields = {}) => console.log(JSON.stringify({ step, ...fields }));
// Stats as fivebeans hands them over: the reply parsed by js-yaml.
const pick = (stats, keys) => Object.fromEntries(keys.map((key) => [key, stats[key]]));

const client = new fivebeans.client(host, Number(port));
// fivebeans calls back with (error, ...results); the error is the server's reply word.
const call = (command, ...args) => new Promise((resolve, reject) => {
  client[command](...args, (err, ...results) => (err ? reject(new Error(err)) : resolve(results)));
});
const errorOf = (promise) => promise.then(() => null, (err) => err.message);
const reserve = async (timeout) => {
  const [id, payload] = await call('reserve_with_timeout', timeout);
  return { id: Number(id), payload };
};
const jobStats = async (id) => {
  const [stats] = await call('stats_job', id);
  emit('stats-job', { id, stats: pick(stats, JOB_KEYS) });
};
const tubeStats = async () => emit('stats-tube', { stats: pick((await call('stats_tube', name))[0], TUBE_KEYS) });

async function main() {
  await new Promise((resolve, reject) => client.on('connect', resolve).on('error', reject).connect());
  await call('use', name);
  emit('used', { tube: (await call('list_tube_used'))[0] });
  const ids = [];
  for (const [pri, delay, ttr, body] of [
    [10, 0, 30, TEXT], [5, 0, 30, BINARY], [100, 60, 5, 'later'], [20, 0, 60, LARGE],
  ]) {
    ids.push(Number((await call('put', pri, delay, ttr, body))[0]));
  }
  emit('put', { ids });
  await jobStats(3);
  const [delayedId, delayed] = await call('peek_delayed');
  emit('peek-delayed', { id: Number(delayedId), body: delayed.toString() });
  emit('peek-ready', { id: Number((await call('peek_ready'))[0]) });

  await call('watch', name);
  await call('watch', `${name}-other`);
  await call('ignore', 'default');
  await call('ignore', `${name}-other`);
  emit('watched', { tubes: (await call('list_tubes_watched'))[0] });

  const binary = await reserve(1);
  emit('reserved', { id: binary.id, body_hex: binary.payload.toString('hex') });
  await jobStats(binary.id);
  let text = await reserve(1);
  emit('reserved', { id: text.id, text: text.payload.toString() });
  await call('bury', text.id, 50);
  emit('peek-buried', { id: Number((await call('peek_buried'))[0]) });
  await jobStats(text.id);
  emit('kicked', { count: Number((await call('kick', 10))[0]) });
  await jobStats(text.id);
  await call('release', binary.id, 1000, 1);
  await jobStats(binary.id);

  const large = await reserve(1);
  emit('reserved', {
    id: large.id,
    size: large.payload.length,
    sha256: crypto.createHash('sha256').update(large.payload).digest('hex'),
  });
  await call('destroy', large.id);
  text = await reserve(1);
  emit('reserved', { id: text.id, text: text.payload.toString() });
  await call('touch', text.id);
  await call('destroy', text.id);
  const back = await reserve(5); // back from its one-second release delay
  emit('reserved', { id: back.id, body_hex: back.payload.toString('hex') });
  await call('destroy', back.id);
  emit('timed-out', { error: await errorOf(reserve(0)) });

  await call('kick_job', 3);
  await jobStats(3);
  await tubeStats();
  await call('pause_tube', name, 60);
  await tubeStats();
  const [peekedId, peeked] = await call('peek', 3);
  emit('peek', { id: Number(peekedId), body: peeked.toString() });
  await call('destroy', 3);

  emit('delete-missing', { error: await errorOf(call('destroy', 3)) });
  emit('peek-missing', { error: await errorOf(call('peek', 3)) });
  emit('too-big', { error: await errorOf(call('put', 0, 0, 60, 'x'.repeat(65536))) });
  emit('not-ignored', { error: await errorOf(call('ignore', name)) });
  emit('list-tubes', { tubes: (await call('list_tubes'))[0] });
  const [stats] = await call('stats');
  emit('stats', { stats: pick(stats, ['total-jobs', 'current-tubes', 'cmd-put', 'cmd-delete']) });
  client.end();
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
