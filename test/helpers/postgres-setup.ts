/** vitest globalSetup of the `postgres` project: one throwaway cluster for the run. */
import type { TestProject } from 'vitest/node';
import { startPostgres, type Postgres } from '../../tools/postgres.ts';

declare module 'vitest' {
  export interface ProvidedContext {
    postgresUrl: string | undefined;
  }
}

let cluster: Postgres | undefined;

export async function setup(project: TestProject): Promise<void> {
  cluster = await startPostgres();
  project.provide('postgresUrl', cluster.url);
}

export async function teardown(): Promise<void> {
  await cluster?.stop();
}
