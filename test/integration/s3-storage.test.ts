import { describeWithTools } from '../support/tools.ts';
import { s3Tool, startS3Server, type S3Server } from '../support/s3.ts';
import { runDriverSuite } from '../../src/registry/storage/testsuite.ts';

describeWithTools([s3Tool], 'S3 driver on versitygw', () => {
  let server: S3Server;
  beforeAll(async () => {
    server = await startS3Server();
  });
  afterAll(async () => {
    await server?.stop();
  });

  runDriverSuite('s3', async () => {
    const bucket = await server.createBucket();
    // The smallest part S3 allows, so that the suite's objects span several parts.
    return {
      driver: server.driver(bucket, { partBytes: 5 * 1024 * 1024 }),
      cleanup: async () => undefined,
    };
  });

  runDriverSuite('s3 under a prefix', async () => {
    const bucket = await server.createBucket();
    return {
      driver: server.driver(bucket, { prefix: '/some/root/' }),
      cleanup: async () => undefined,
    };
  });
});
