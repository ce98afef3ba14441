export * from './algorithms.js';
export * from './attempts.js';
export * from './clock.js';
export * from './connect.js';
export * from './health.js';
export * from './outlier.js';
export * from './pool.js';
