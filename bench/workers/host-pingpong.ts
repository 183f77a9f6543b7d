// The hand-over to a parked waiting process (bench/host.ts handoverUs): two
// processes of this script. The holder (argv ['parent-helper']) takes the
// host lock on 'hold'; the child (argv ['child']) asks for it on 'take' and
// parks (its event loop asleep in epoll); on 'release' the holder stamps and
// releases; the child stamps when its callback runs. Both stamp
// process.hrtime.bigint() (CLOCK_MONOTONIC, one clock for both).
import { locks } from '../../src/index.js';

const NAME = 'bench:pingpong';

/** Take the lock; resolves with its release once granted. */
export function take(): Promise<() => void> {
  return new Promise((granted) => {
    void locks.request(NAME, { scope: 'host' }, () => new Promise<void>((release) => granted(release)));
  });
}

if (process.argv[2] === 'parent-helper') {
  let release: (() => void) | undefined;
  process.on('message', async (m: string) => {
    if (m === 'hold') {
      release = await take();
      process.send!('held');
    } else if (m === 'release') {
      const t0 = process.hrtime.bigint();
      release!();
      process.send!({ t0: t0.toString() });
    }
  });
  process.send!('ready');
} else if (process.argv[2] === 'child') {
  process.on('message', async (m: string) => {
    if (m === 'take') {
      process.send!('asking');
      const release = await take();
      const t = process.hrtime.bigint();
      release();
      process.send!({ t: t.toString() });
    } else if (m === 'exit') {
      process.exit(0);
    }
  });
  process.send!('ready');
}
