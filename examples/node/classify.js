#!/usr/bin/env node
// Classify images and extract their features with an imageserve server, from Node.js.
//
//   npm install
//   node classify.js --address localhost:8500 --model mobilenet_v2 [--features-model vgg16] [--top-k 5] IMAGE...
//
// Loads ../../protos/imageserve/v1/image_service.proto at run time (no code generation) and prints one
// JSON object: {"classify": {...}, "features": {...}}. Options can also come from the environment:
// IMAGESERVE_ADDRESS, IMAGESERVE_TOKEN (sent as "authorization: Bearer <token>"), IMAGESERVE_CA_CERT
// (PEM file: use TLS and trust this CA).
'use strict';

const fs = require('fs');
const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTO_ROOT = path.resolve(__dirname, '..', '..', 'protos');

function parseArgs(argv) {
  const options = {
    address: process.env.IMAGESERVE_ADDRESS || 'localhost:8500',
    model: 'mobilenet_v2',
    featuresModel: null,
    topK: 5,
    timeoutS: 30,
    images: [],
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) throw new Error(`${arg} needs a value`);
      return argv[++i];
    };
    if (arg === '--address') options.address = next();
    else if (arg === '--model') options.model = next();
    else if (arg === '--features-model') options.featuresModel = next();
    else if (arg === '--top-k') options.topK = parseInt(next(), 10);
    else if (arg === '--timeout') options.timeoutS = parseFloat(next());
    else if (arg === '--help' || arg === '-h') options.help = true;
    else if (arg.startsWith('--')) throw new Error(`unknown option ${arg}`);
    else options.images.push(arg);
  }
  options.featuresModel = options.featuresModel || options.model;
  return options;
}

function loadService() {
  const definition = protoLoader.loadSync('imageserve/v1/image_service.proto', {
    includeDirs: [PROTO_ROOT],
    keepCase: true, // field names as in the .proto: top_k, class_id
    longs: Number, // int64 versions as numbers
    enums: String,
    defaults: true,
    oneofs: true,
  });
  return grpc.loadPackageDefinition(definition).imageserve.v1.ImageModelService;
}

function credentials() {
  const ca = process.env.IMAGESERVE_CA_CERT;
  return ca ? grpc.credentials.createSsl(fs.readFileSync(ca)) : grpc.credentials.createInsecure();
}

function call(client, method, request, timeoutS) {
  const metadata = new grpc.Metadata();
  if (process.env.IMAGESERVE_TOKEN) metadata.add('authorization', `Bearer ${process.env.IMAGESERVE_TOKEN}`);
  const deadline = new Date(Date.now() + timeoutS * 1000);
  return new Promise((resolve, reject) => {
    client[method](request, metadata, { deadline }, (error, response) => (error ? reject(error) : resolve(response)));
  });
}

async function main() {
  const options = parseArgs(process.argv.slice(2));
  if (options.help || options.images.length === 0) {
    console.error('usage: node classify.js [--address HOST:PORT] [--model NAME] [--features-model NAME] [--top-k K] IMAGE...');
    return options.help ? 0 : 2;
  }
  const images = options.images.map((file) => fs.readFileSync(file));
  const Service = loadService();
  const client = new Service(options.address, credentials());
  try {
    const classified = await call(
      client, 'Classify', { model: { name: options.model }, images, top_k: options.topK }, options.timeoutS);
    const extracted = await call(
      client, 'ExtractFeatures', { model: { name: options.featuresModel }, images }, options.timeoutS);
    const output = {
      classify: {
        model: classified.model.name,
        version: classified.model.version,
        results: classified.results.map((r) => r.predictions.map((p) => ({
          class_id: p.class_id, label: p.label, score: p.score,
        }))),
      },
      features: {
        model: extracted.model.name,
        version: extracted.model.version,
        dimension: extracted.dimension,
        features: extracted.features.map((f) => f.values),
      },
    };
    process.stdout.write(JSON.stringify(output) + '\n');
    return 0;
  } catch (error) {
    // gRPC status name and the server's message, e.g. "NOT_FOUND: unknown model 'x'; available models: ..."
    const name = Object.keys(grpc.status).find((key) => grpc.status[key] === error.code) || error.code;
    console.error(`${name}: ${error.details || error.message}`);
    return 1;
  } finally {
    client.close();
  }
}

main().then((code) => process.exit(code), (error) => {
  console.error(`error: ${error.message}`);
  process.exit(2);
});
