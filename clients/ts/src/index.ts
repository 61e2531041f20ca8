// A client for the ohmygpu daemon's gRPC API: the generated services (src/gen, from proto/ by
// `npm run generate`) over @connectrpc/connect-node's gRPC transport, connected the way the
// Python CLI connects (services/ohmygpu/cli/client.py, core/settings.py `client_target`):
//
//   OMG_HOST    host[:port] or grpcs://host[:port] (port 11435 when left out); else OMG_GRPC_ADDR,
//               else 127.0.0.1:11435. grpcs:// or https://, or OMG_TLS_CA, means TLS.
//   OMG_TOKEN   sent as `authorization: Bearer <token>` on every call.
//   OMG_TLS_CA  a PEM file of the CA to trust (the system roots when empty).
import { readFileSync } from "node:fs";
import { Code, ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";

import { AudioService } from "./gen/ohmygpu/api/v1/audio_pb.js";
import { ChatService } from "./gen/ohmygpu/api/v1/chat_pb.js";
import { EmbeddingService } from "./gen/ohmygpu/api/v1/embeddings_pb.js";
import { EventService } from "./gen/ohmygpu/api/v1/events_pb.js";
import { ImageService } from "./gen/ohmygpu/api/v1/images_pb.js";
import { JobService } from "./gen/ohmygpu/api/v1/jobs_pb.js";
import { ModelService } from "./gen/ohmygpu/api/v1/models_pb.js";
import { RunService } from "./gen/ohmygpu/api/v1/runs_pb.js";
import { SystemService } from "./gen/ohmygpu/api/v1/system_pb.js";

export { Code, ConnectError };
export const DEFAULT_PORT = 11435;

export interface ConnectOptions {
  /** host[:port] or grpcs://host[:port]; default OMG_HOST, OMG_GRPC_ADDR, 127.0.0.1:11435. */
  host?: string;
  /** Bearer token; default OMG_TOKEN. */
  token?: string;
  /** Path of a PEM CA bundle to trust; default OMG_TLS_CA. Setting one means TLS. */
  tlsCa?: string;
}

/** Where to connect: the base URL the transport takes, and whether it is TLS. */
export function target(host: string, tlsCa = ""): { baseUrl: string; tls: boolean } {
  const raw = host.trim();
  const sep = raw.indexOf("://");
  const scheme = sep >= 0 ? raw.slice(0, sep) : "";
  let rest = (sep >= 0 ? raw.slice(sep + 3) : raw).replace(/\/+$/, "");
  if (!["", "grpc", "grpcs", "http", "https"].includes(scheme)) {
    throw new Error(`OMG_HOST ${JSON.stringify(raw)}: use host[:port] or grpcs://host[:port]`);
  }
  const hasPort = rest.startsWith("[") ? rest.includes("]:") : rest.split(":").length === 2;
  if (!hasPort) rest = `${rest}:${DEFAULT_PORT}`;
  const tls = scheme === "grpcs" || scheme === "https" || tlsCa !== "";
  return { baseUrl: `${tls ? "https" : "http"}://${rest}`, tls };
}

/** The daemon's services over one HTTP/2 connection. */
export interface OmgClient {
  models: Client<typeof ModelService>;
  chat: Client<typeof ChatService>;
  system: Client<typeof SystemService>;
  jobs: Client<typeof JobService>;
  events: Client<typeof EventService>;
  runs: Client<typeof RunService>;
  embeddings: Client<typeof EmbeddingService>;
  audio: Client<typeof AudioService>;
  images: Client<typeof ImageService>;
  baseUrl: string;
}

export function connect(options: ConnectOptions = {}): OmgClient {
  const env = process.env;
  const host = options.host ?? (env.OMG_HOST || env.OMG_GRPC_ADDR || `127.0.0.1:${DEFAULT_PORT}`);
  const token = options.token ?? env.OMG_TOKEN ?? "";
  const tlsCa = options.tlsCa ?? env.OMG_TLS_CA ?? "";
  const { baseUrl, tls } = target(host, tlsCa);
  const interceptors: Interceptor[] = [];
  if (token) {
    interceptors.push((next) => async (req) => {
      req.header.set("authorization", `Bearer ${token}`);
      return next(req);
    });
  }
  const transport = createGrpcTransport({
    baseUrl,
    interceptors,
    nodeOptions: tls && tlsCa ? { ca: readFileSync(tlsCa) } : {},
  });
  return {
    models: createClient(ModelService, transport),
    chat: createClient(ChatService, transport),
    system: createClient(SystemService, transport),
    jobs: createClient(JobService, transport),
    events: createClient(EventService, transport),
    runs: createClient(RunService, transport),
    embeddings: createClient(EmbeddingService, transport),
    audio: createClient(AudioService, transport),
    images: createClient(ImageService, transport),
    baseUrl,
  };
}

export * from "./gen/ohmygpu/api/v1/models_pb.js";
export * from "./gen/ohmygpu/api/v1/jobs_pb.js";
export { EventKind } from "./gen/ohmygpu/events/v1/events_pb.js";
export { FinishReason } from "./gen/ohmygpu/runtime/v1/runtime_pb.js";
