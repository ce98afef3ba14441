import { jest } from '@jest/globals';

// End-to-end tests start real servers; a cold apiserver alone can take tens of seconds on 2 cores.
jest.setTimeout(Number(process.env.FLB_E2E_TIMEOUT_MS ?? 180_000));
