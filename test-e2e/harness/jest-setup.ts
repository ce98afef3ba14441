import { jest } from '@jest/globals';

// End-to-end tests start real servers; a cold apiserver alone can take tens of seconds on 2 cores.
jest.setTimeout(180_000);
