# The scenario of tests/test_foreign_clients.py through beaneater's public API.
# Usage: ruby beaneater.rb HOST PORT TUBE. Prints one JSON object a line; the test compares them.
require 'beaneater'
require 'digest'
require 'json'

host, port, name = ARGV
TEXT = 'héllo wörld ✓ 日本'
BINARY = ((0..255).to_a.pack('C*') + TEXT.b)
LARGE = 'beanq ' * 10_000
TOO_BIG = 'x' * 65_536
JOB_KEYS = %w[tube state pri delay ttr reserves releases buries kicks].freeze
TUBE_KEYS = %w[name current-jobs-ready current-jobs-delayed current-jobs-buried
               current-jobs-reserved total-jobs current-using current-watching cmd-delete
               cmd-pause-tube pause].freeze

$stdout.sync = true
def emit(step, **fields) = puts(JSON.generate({ step: step }.merge(fields)))

# Stats as beaneater hands them over: a StatStruct whose keys use '_' for '-'.
def pick(stats, keys) = keys.to_h { |key| [key, stats[key.tr('-', '_')]] }

def job_stats(job) = emit('stats-job', id: Integer(job.id), stats: pick(job.stats, JOB_KEYS))

def error_of
  yield
  nil
rescue Beaneater::UnexpectedResponse => e
  e.class.name.split('::').last
end

client = Beaneater.new("#{host}:#{port}")
tubes = client.tubes
tubes.use(name)
emit 'used', tube: tubes.used.name
tube = tubes[name]
puts_replies = [
  tube.put(TEXT, pri: 10, delay: 0, ttr: 30),
  tube.put(BINARY, pri: 5, ttr: 30),
  tube.put('later', pri: 100, delay: 60, ttr: 5),
  tube.put(LARGE, pri: 20)
]
emit 'put', ids: puts_replies.map { |reply| Integer(reply[:id]) }
later = client.jobs.find(3)
job_stats(later)
delayed = tube.peek(:delayed)
emit 'peek-delayed', id: Integer(delayed.id), body: delayed.body
emit 'peek-ready', id: Integer(tube.peek(:ready).id)

tubes.watch(name, "#{name}-other")
tubes.ignore('default', "#{name}-other")
emit 'watched', tubes: tubes.watched.map(&:name)

binary = tubes.reserve(1)
emit 'reserved', id: Integer(binary.id), body_hex: binary.body.unpack1('H*')
job_stats(binary)
text = tubes.reserve(1)
emit 'reserved', id: Integer(text.id), text: text.body.dup.force_encoding('UTF-8')
text.bury(pri: 50)
emit 'peek-buried', id: Integer(tube.peek(:buried).id)
job_stats(text)
emit 'kicked', count: Integer(tube.kick(10)[:id])
job_stats(text)
binary.release(pri: 1000, delay: 1)
job_stats(binary)

large = tubes.reserve(1)
emit 'reserved', id: Integer(large.id), size: large.body.bytesize,
                 sha256: Digest::SHA256.hexdigest(large.body)
large.delete
text = tubes.reserve(1)
emit 'reserved', id: Integer(text.id), text: text.body.dup.force_encoding('UTF-8')
text.touch
text.delete
binary = tubes.reserve(5) # back from its one-second release delay
emit 'reserved', id: Integer(binary.id), body_hex: binary.body.unpack1('H*')
binary.delete
emit 'timed-out', error: error_of { tubes.reserve(0) }

later.kick
job_stats(later)
emit 'stats-tube', stats: pick(tube.stats, TUBE_KEYS)
tube.pause(60)
emit 'stats-tube', stats: pick(tube.stats, TUBE_KEYS)
peeked = client.jobs.find(3)
emit 'peek', id: Integer(peeked.id), body: peeked.body
peeked.delete

emit 'delete-missing', error: error_of { peeked.delete }
emit 'peek-missing', job: client.jobs.find(3)
emit 'too-big', error: error_of { tube.put(TOO_BIG) }
emit 'not-ignored', error: error_of { tubes.ignore(name) }
emit 'list-tubes', tubes: tubes.all.map(&:name)
emit 'stats', stats: pick(client.stats, %w[total-jobs current-tubes cmd-put cmd-delete])
client.close
