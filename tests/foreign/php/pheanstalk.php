<?php
// The scenario of tests/test_foreign_clients.py through Pheanstalk 4's public API.
// Usage: php pheanstalk.php HOST PORT TUBE. Prints one JSON object a line; the test compares them.
declare(strict_types=1);

require_once 'Pheanstalk/autoload.php'; // Debian's php-pda-pheanstalk, in /usr/share/php

use Pheanstalk\Contract\ResponseInterface;
use Pheanstalk\Exception as PheanstalkException;
use Pheanstalk\JobId;
use Pheanstalk\Pheanstalk;

[, $host, $port, $name] = $argv;
const TEXT = 'héllo wörld ✓ 日本';
$binary = implode('', array_map('chr', range(0, 255))) . TEXT;
$large = str_repeat('beanq ', 10000);
const JOB_KEYS = ['tube', 'state', 'pri', 'delay', 'ttr', 'reserves', 'releases', 'buries', 'kicks'];
const TUBE_KEYS = [
    'name', 'current-jobs-ready', 'current-jobs-delayed', 'current-jobs-buried',
    'current-jobs-reserved', 'total-jobs', 'current-using', 'current-watching', 'cmd-delete',
    'cmd-pause-tube', 'pause',
];

function emit(string $step, array $fields = []): void
{
    echo json_encode(['step' => $step] + $fields, JSON_UNESCAPED_UNICODE | JSON_THROW_ON_ERROR), "\n";
}

// Stats as Pheanstalk hands them over: an ArrayResponse of the reply's text after each ': '.
function pick(ResponseInterface $stats, array $keys): array
{
    return array_combine($keys, array_map(fn ($key) => $stats[$key], $keys));
}

function jobStats(Pheanstalk $client, int $id): void
{
    emit('stats-job', ['id' => $id, 'stats' => pick($client->statsJob(new JobId($id)), JOB_KEYS)]);
}

function errorOf(callable $call): ?string
{
    try {
        $call();
        return null;
    } catch (PheanstalkException $e) {
        return (new ReflectionClass($e))->getShortName() . ': ' . $e->getMessage();
    }
}

$client = Pheanstalk::create($host, (int) $port, 5);
$client->useTube($name);
emit('used', ['tube' => $client->listTubeUsed(true)]);
$ids = [
    $client->put(TEXT, 10, 0, 30)->getId(),
    $client->put($binary, 5, 0, 30)->getId(),
    $client->put('later', 100, 60, 5)->getId(),
    $client->put($large, 20)->getId(),
];
emit('put', ['ids' => $ids]);
jobStats($client, 3);
$delayed = $client->peekDelayed();
emit('peek-delayed', ['id' => $delayed->getId(), 'body' => $delayed->getData()]);
emit('peek-ready', ['id' => $client->peekReady()->getId()]);

$client->watch($name)->watch("$name-other")->ignore('default')->ignore("$name-other");
emit('watched', ['tubes' => $client->listTubesWatched(true)]);

$job = $client->reserveWithTimeout(1);
emit('reserved', ['id' => $job->getId(), 'body_hex' => bin2hex($job->getData())]);
jobStats($client, $job->getId());
$text = $client->reserveWithTimeout(1);
emit('reserved', ['id' => $text->getId(), 'text' => $text->getData()]);
$client->bury($text, 50);
emit('peek-buried', ['id' => $client->peekBuried()->getId()]);
jobStats($client, $text->getId());
emit('kicked', ['count' => $client->kick(10)]);
jobStats($client, $text->getId());
$client->release($job, 1000, 1);
jobStats($client, $job->getId());

$large = $client->reserveWithTimeout(1);
emit('reserved', [
    'id' => $large->getId(),
    'size' => strlen($large->getData()),
    'sha256' => hash('sha256', $large->getData()),
]);
$client->delete($large);
$text = $client->reserveWithTimeout(1);
emit('reserved', ['id' => $text->getId(), 'text' => $text->getData()]);
$client->touch($text);
$client->delete($text);
$job = $client->reserveWithTimeout(5); // back from its one-second release delay
emit('reserved', ['id' => $job->getId(), 'body_hex' => bin2hex($job->getData())]);
$client->delete($job);
emit('timed-out', ['job' => $client->reserveWithTimeout(0)]);

$client->kickJob(new JobId(3));
jobStats($client, 3);
emit('stats-tube', ['stats' => pick($client->statsTube($name), TUBE_KEYS)]);
$client->pauseTube($name, 60);
emit('stats-tube', ['stats' => pick($client->statsTube($name), TUBE_KEYS)]);
$peeked = $client->peek(new JobId(3));
emit('peek', ['id' => $peeked->getId(), 'body' => $peeked->getData()]);
$client->delete($peeked);

emit('delete-missing', ['error' => errorOf(fn () => $client->delete($peeked))]);
emit('peek-missing', ['error' => errorOf(fn () => $client->peek($peeked))]);
emit('too-big', ['error' => errorOf(fn () => $client->put(str_repeat('x', 65536)))]);
emit('not-ignored', ['error' => errorOf(fn () => $client->ignore($name))]);
emit('list-tubes', ['tubes' => $client->listTubes()]);
emit('stats', ['stats' => pick($client->stats(), ['total-jobs', 'current-tubes', 'cmd-put', 'cmd-delete'])]);
