// One step of an LLM proxy, in Node.js, against meter: reserve the worst case before calling the
// model, commit what the call used after it, and tell a refusal for lack of tokens apart from
// every other failure by its google.rpc.ErrorInfo reason (never by the message text).
//
//   node proxy.js --target 127.0.0.1:50051 --account acme --input 1200 --max-output 800 --output 350
//
// The bearer token comes from METER_TOKEN (a caller with the `proxy` role). Prints one JSON line
// per outcome and exits 0 when the step was committed or refused for lack of tokens.
'use strict';

const fs = require('node:fs');
const path = require('node:path');
const { randomUUID } = require('node:crypto');
const { parseArgs } = require('node:util');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const protobuf = require('protobufjs');

const PROTOS = path.resolve(__dirname, '..', '..', 'protos'); // the contract, loaded as it is
const GOOGLE = path.resolve(path.dirname(require.resolve('google-proto-files/package.json'))); // google/type, google/rpc

function meterClient(target, token) {
  const definition = protoLoader.loadSync(path.join(PROTOS, 'meter/v1/meter.proto'), {
    includeDirs: [PROTOS, GOOGLE],
    keepCase: true, // field names as in the .proto: account_id, not accountId
    longs: String, // int64 as strings: no precision lost above 2^53
    enums: String,
    defaults: true,
  });
  const { MeterService } = grpc.loadPackageDefinition(definition).meter.v1;
  const metadata = new grpc.Metadata();
  if (token) metadata.set('authorization', `Bearer ${token}`);
  // Deadlines and retries per method, as the contract ships them: Reserve fails fast (3 s, a user
  // waits); Commit, Release and ExtendReservation wait for meter and retry for up to 30 s, so a
  // restart of meter does not make the model call free.
  const serviceConfig = fs.readFileSync(path.join(PROTOS, 'meter/v1/service_config.json'), 'utf8');
  const client = new MeterService(target, grpc.credentials.createInsecure(), {
    'grpc.service_config': serviceConfig,
    'grpc.initial_reconnect_backoff_ms': 100,
    'grpc.max_reconnect_backoff_ms': 1000,
  });
  const call = (method, request) =>
    new Promise((resolve, reject) =>
      client[method](request, metadata, (error, reply) => (error ? reject(error) : resolve(reply))),
    );
  return { call, close: () => client.close() };
}

// google.rpc.Status travels in the grpc-status-details-bin trailer; its details hold the ErrorInfo.
const rpcTypes = new protobuf.Root();
rpcTypes.resolvePath = (_origin, target) => (path.isAbsolute(target) ? target : path.join(GOOGLE, target));
rpcTypes.loadSync(['google/rpc/status.proto', 'google/rpc/error_details.proto']);
const Status = rpcTypes.lookupType('google.rpc.Status');
const ErrorInfo = rpcTypes.lookupType('google.rpc.ErrorInfo');

function errorInfo(error) {
  const [details] = error.metadata ? error.metadata.get('grpc-status-details-bin') : [];
  if (!details) return null;
  for (const any of Status.decode(details).details) {
    if (any.type_url === 'type.googleapis.com/google.rpc.ErrorInfo') {
      return ErrorInfo.toObject(ErrorInfo.decode(any.value));
    }
  }
  return null;
}

async function step(meter, { account, model, input, maxOutput, output, modelSeconds }) {
  let hold;
  try {
    hold = await meter.call('Reserve', {
      account_id: account,
      request_id: randomUUID(), // retry a failed Reserve with the same id: it is idempotent
      model,
      input_tokens: input,
      max_output_tokens: maxOutput,
    });
  } catch (error) {
    const info = errorInfo(error);
    if (error.code === grpc.status.FAILED_PRECONDITION && info && info.reason === 'INSUFFICIENT_TOKENS') {
      // Tell the end user their balance is too low; nothing was held.
      return { step: 'refused', reason: info.reason, required: info.metadata.required, available: info.metadata.available };
    }
    throw error;
  }
  console.log(JSON.stringify({ step: 'reserved', reservation_id: hold.reservation_id }));
  // ... call the model here; it reports `output` tokens ...
  await new Promise((resolve) => setTimeout(resolve, modelSeconds * 1000));
  const charge = await meter.call('Commit', {
    reservation_id: hold.reservation_id,
    input_tokens: input,
    output_tokens: output,
  });
  return {
    step: 'committed',
    reservation_id: hold.reservation_id,
    held_tokens: hold.held_tokens,
    charged_tokens: charge.charged_tokens,
    cost_micros: charge.cost_micros,
    available: charge.balance.available,
  };
}

async function main() {
  const { values } = parseArgs({
    options: {
      target: { type: 'string', default: '127.0.0.1:50051' },
      account: { type: 'string' },
      model: { type: 'string', default: 'gpt-4o' },
      input: { type: 'string', default: '1200' },
      'max-output': { type: 'string', default: '800' },
      output: { type: 'string', default: '350' },
      'model-seconds': { type: 'string', default: '0' }, // how long the pretend model call takes
    },
  });
  const meter = meterClient(values.target, process.env.METER_TOKEN);
  try {
    const outcome = await step(meter, {
      account: values.account,
      model: values.model,
      input: Number(values.input),
      maxOutput: Number(values['max-output']),
      output: Number(values.output),
      modelSeconds: Number(values['model-seconds']),
    });
    console.log(JSON.stringify(outcome));
  } catch (error) {
    const info = errorInfo(error);
    console.log(JSON.stringify({ step: 'failed', code: grpc.status[error.code], reason: info ? info.reason : '', message: error.details }));
    process.exitCode = 1;
  } finally {
    meter.close();
  }
}

main();
