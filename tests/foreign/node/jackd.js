// The scenario of tests/test_foreign_clients.py through jackd's public API.
// Usage: node jackd.js HOST PORT TUBE. Prints one JSON object a line; the test compares them.
//
// jackd hands YAML replies over as text and leaves parsing to the caller, so this script reads
// each value as the text after "key: ", quotes included: what the server sent, byte for byte.
// jackd 2.2.2's pauseTube sends no CRLF after the command, so no server can answer it: the
// scenario leaves pause-tube out here.
'use strict';
const crypto = require('crypto');
const Jackd = require('jackd');

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
const escape = (key) => key.replace(/[-]/g, '\\-');
const pick = (yaml, keys) => Object.fromEntries(
  keys.map((key) => [key, (yaml.match(new RegExp(`^${escape(key)}: (.*)$`, 'm')) || [])[1]]),
);
const yamlList = (yaml) => yaml.split('\n').filter((line) => line.startsWith('- ')).map((line) => line.slice(2));
const errorOf = (promise) => promise.then(() => null, (err) => err.message);

async function main() {
  const client = new Jackd();
  await client.connect({ host, port: Number(port) });
  const jobStats = async (id) => emit('stats-job', { id, stats: pick(await client.statsJob(String(id)), JOB_KEYS) });
  const tubeStats = async () => emit('stats-tube', { stats: pick(await client.statsTube(name), TUBE_KEYS) });
  const reserve = async (timeout) => {
    const { id, payload } = await client.reserveWithTimeout(timeout);
    return { id: Number(id), payload };
  };

  await client.use(name);
  emit('used', { tube: await client.listTubeUsed() });
  const ids = [
    await client.put(TEXT, { priority: 10, delay: 0, ttr: 30 }),
    await client.put(BINARY, { priority: 5, ttr: 30 }),
    await client.put('later', { priority: 100, delay: 60, ttr: 5 }),
    await client.put(LARGE, { priority: 20 }),
  ];
  emit('put', { ids: ids.map(Number) });
  await jobStats(3);
  const delayed = await client.peekDelayed();
  emit('peek-delayed', { id: Number(delayed.id), body: delayed.payload.toString() });
  emit('peek-ready', { id: Number((await client.peekReady()).id) });

  await client.watch(name);
  await client.watch(`${name}-other`);
  await client.ignore('default');
  await client.ignore(`${name}-other`);
  emit('watched', { tubes: yamlList(await client.listTubesWatched()) });

  const binary = await reserve(1);
  emit('reserved', { id: binary.id, body_hex: binary.payload.toString('hex') });
  await jobStats(binary.id);
  let text = await reserve(1);
  emit('reserved', { id: text.id, text: text.payload.toString() });
  await client.bury(String(text.id), 50);
  emit('peek-buried', { id: Number((await client.peekBuried()).id) });
  await jobStats(text.id);
  emit('kicked', { count: await client.kick(10) });
  await jobStats(text.id);
  await client.release(String(binary.id), { priority: 1000, delay: 1 });
  await jobStats(binary.id);

  const large = await reserve(1);
  emit('reserved', {
    id: large.id,
    size: large.payload.length,
    sha256: crypto.createHash('sha256').update(large.payload).digest('hex'),
  });
  await client.delete(String(large.id));
  text = await reserve(1);
  emit('reserved', { id: text.id, text: text.payload.toString() });
  await client.touch(String(text.id));
  await client.delete(String(text.id));
  const back = await reserve(5); // back from its one-second release delay
  emit('reserved', { id: back.id, body_hex: back.payload.toString('hex') });
  await client.delete(String(back.id));
  emit('timed-out', { error: await errorOf(reserve(0)) });

  await client.kickJob('3');
  await jobStats(3);
  await tubeStats();
  const peeked = await client.peek('3');
  emit('peek', { id: Number(peeked.id), body: peeked.payload.toString() });
  await client.delete('3');

  emit('delete-missing', { error: await errorOf(client.delete('3')) });
  emit('peek-missing', { error: await errorOf(client.peek('3')) });
  emit('too-big', { error: await errorOf(client.put('x'.repeat(65536))) });
  emit('not-ignored', { error: await errorOf(client.ignore(name)) });
  emit('list-tubes', { tubes: yamlList(await client.listTubes()) });
  emit('stats', { stats: pick(await client.stats(), ['total-jobs', 'current-tubes', 'cmd-put', 'cmd-delete']) });
  await client.disconnect();
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
