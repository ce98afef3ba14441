/*
 * Imported first by the entries of the processes every injected pod starts (the sidecar, flb-init),
 * before any schema is built or parsed. zod compiles an object schema's parser with `new Function`
 * on its first parse: that pays off in a process that parses many documents (the bridge, the
 * injector, which keep the default), but a pod's process parses a handful, so the compiling is
 * start-up CPU on the cores the pod's app is starting on. Measured: importing the contract and
 * parsing the default mesh 60-72 ms of CPU with the compiling, 58 without; parses no slower.
 */
import { z } from 'zod';

z.config({ jitless: true });
