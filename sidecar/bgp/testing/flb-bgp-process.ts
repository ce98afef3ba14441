// `flb bgp` as the end-to-end tests run it: the real command (sidecar/cli.ts's bgp) under the CLI's
// conventions, bundled by the test with esbuild, so the test does not depend on dist/ being built.
import { Command } from 'commander';
import { runCli } from '../../../common/cli.js';
import { bgpCommand } from '../cli.js';

process.exitCode = await runCli(new Command('flb').addCommand(bgpCommand()), process.argv);
