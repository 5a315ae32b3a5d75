/**
 * vitest globalSetup: one throwaway redis-server for the run, its URL given to
 * the tests as inject('redisUrl'). Without the Debian package redis-server the
 * URL is undefined and the tests that need it skip (vitest.config.ts says so
 * once).
 */
import type { TestProject } from 'vitest/node';
import { redisBin, startRedis, type Redis } from '../../tools/redis.ts';

declare module 'vitest' {
  export interface ProvidedContext {
    redisUrl: string | undefined;
  }
}

let server: Redis | undefined;

export async function setup(project: TestProject): Promise<void> {
  if (redisBin() === undefined) {
    project.provide('redisUrl', undefined);
    return;
  }
  server = await startRedis();
  project.provide('redisUrl', server.url);
}

export async function teardown(): Promise<void> {
  await server?.stop();
}
