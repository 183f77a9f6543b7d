// The wake floor's reading side (bench/host-floors.ts fifoWakeUs): forked
// with argv [fifo, 'libuv' | 'sync']. libuv: the FIFO read through a
// net.Socket, as a waiting escalator reads it (bridge/host/fifo.ts);
// sync: a blocking fs.readSync, as a blocked lockSync() does. Stamps
// process.hrtime.bigint() (CLOCK_MONOTONIC, one clock for both processes)
// first thing when a byte arrives and sends it; 'q' ends it.
import * as fs from 'node:fs';
import * as net from 'node:net';

const [fifo, mode] = process.argv.slice(2) as [string, 'libuv' | 'sync'];
const C = fs.constants;
const fd = fs.openSync(fifo, mode === 'sync' ? C.O_RDWR : C.O_RDWR | C.O_NONBLOCK);
if (mode === 'sync') {
  const buf = Buffer.alloc(64);
  // Blocking reads on the main thread; the IPC channel is serviced between them.
  const loop = () => {
    fs.readSync(fd, buf, 0, 64, null);
    const t = process.hrtime.bigint();
    if (buf[0] === 0x71) process.exit(0);
    process.send!({ t: t.toString() }, () => setImmediate(loop));
  };
  process.once('message', () => setImmediate(loop));
  process.send!('ready');
} else {
  const sock = new net.Socket({ fd, readable: true, writable: false });
  sock.on('data', (b: Buffer) => {
    const t = process.hrtime.bigint();
    if (b[0] === 0x71) process.exit(0);
    process.send!({ t: t.toString() });
  });
  process.send!('ready');
}
