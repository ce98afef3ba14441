#!/usr/bin/env node
import { runCli } from '../common/cli.js';
import { buildProgram } from './program.js';

process.exitCode = await runCli(buildProgram(), process.argv);
