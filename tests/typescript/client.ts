// A small docnum client as a calling system would write it: types generated from the served
// OpenAPI document (openapi-typescript) and openapi-fetch. It must compile under tsc --strict
// without a single cast, and tests/integration/test_typescript_client.py runs it against a live
// service.
import createClient from "openapi-fetch";
import type { components, paths } from "./docnum.js";

type Schemas = components["schemas"];
export type Problem = Schemas["Problem"];
export type IssuedNumber = Schemas["IssuedNumber"];
export type Context = Schemas["NumberingContextBody"];

const BASE = "/api/v1/document-numbering";

export function connect(baseUrl: string, token: string) {
  return createClient<paths>({ baseUrl, headers: { Authorization: `Bearer ${token}` } });
}

export type Client = ReturnType<typeof connect>;

/** What a person should be told; every problem code is handled (the switch is exhaustive). */
export function explain(problem: Problem): string {
  switch (problem.code) {
    case "VALIDATION_FAILED":
    case "UNKNOWN_CODE":
    case "CODE_INACTIVE":
    case "NUMBER_LENGTH": {
      const fields = (problem.errors ?? []).map((e) => ("row" in e ? `row ${e.row}` : e.field));
      return `fix ${fields.join(", ") || "the request"}: ${problem.detail}`;
    }
    case "NO_CONFIG":
    case "TEMPLATE_INVALID":
      return `ask an administrator for a numbering config: ${problem.detail}`;
    case "IDEMPOTENCY_KEY_REQUIRED":
    case "IDEMPOTENCY_KEY_INVALID":
    case "IDEMPOTENCY_KEY_REUSED":
      return `use a new Idempotency-Key: ${problem.title}`;
    case "SEQUENCE_EXHAUSTED":
    case "DUPLICATE_NUMBER":
    case "INVALID_STATE":
    case "COUNTER_FLOOR":
    case "SELF_APPROVAL":
    case "ALREADY_APPROVED":
    case "CONFLICT":
    case "RESERVATION_EXPIRED":
      return `conflict (${problem.status}): ${problem.detail}`;
    case "UNAUTHENTICATED":
    case "FORBIDDEN":
      return `not allowed: ${problem.title}`;
    case "NOT_FOUND":
      return "not found";
    case "METHOD_NOT_ALLOWED":
    case "BAD_REQUEST":
    case "PAYLOAD_TOO_LARGE":
    case "UNSUPPORTED_MEDIA_TYPE":
      return `client bug: ${problem.detail}`;
    case "RATE_LIMITED":
    case "SERVICE_BUSY":
    case "MISROUTED":
    case "INTERNAL_ERROR":
      return `try again later: ${problem.title}`;
    default: {
      const unhandled: never = problem.code;
      return unhandled;
    }
  }
}

class ProblemError extends Error {
  constructor(readonly problem: Problem) {
    super(explain(problem));
  }
}

export async function preview(client: Client, context: Context): Promise<string> {
  const { data, error } = await client.POST(`${BASE}/preview`, { body: context });
  if (error) throw new ProblemError(error);
  return `${data.document_number} (sequence ${data.sequence}, version ${data.config_version ?? "unsaved"})`;
}

/** Issue a number; a second call with the same key is a retry and answers the same number. */
export async function generate(client: Client, context: Context, key: string): Promise<IssuedNumber> {
  const { data, error, response } = await client.POST(`${BASE}/generate`, {
    params: { header: { "Idempotency-Key": key }, query: { timeout: 10 } },
    body: context,
  });
  if (error) throw new ProblemError(error);
  if ("status_url" in data) return poll(client, data.request_id);
  const location: string | null = response.headers.get("Location");
  if (location === null) throw new Error("a 201 carries Location");
  return data;
}

/** Submit a request and poll it until it is answered. */
export async function submit(client: Client, context: Context, key: string): Promise<IssuedNumber> {
  const { data, error } = await client.POST(`${BASE}/requests`, {
    params: { header: { "Idempotency-Key": key } },
    body: { ...context, mode: "generate" },
  });
  if (error) throw new ProblemError(error);
  return poll(client, data.request_id);
}

export async function poll(client: Client, requestId: string): Promise<IssuedNumber> {
  for (let attempt = 0; attempt < 100; attempt++) {
    const { data, error } = await client.GET(`${BASE}/requests/{request_id}`, {
      params: { path: { request_id: requestId } },
    });
    if (error) throw new ProblemError(error);
    if (data.status === "succeeded" && data.result) return data.result;
    if (data.status === "failed" && data.error) throw new Error(`${data.error.code}: ${data.error.detail}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`request ${requestId} was not answered`);
}

/** Two-phase issue: reserve, then confirm with the reservation's token. */
export async function reserveAndConfirm(client: Client, context: Context, key: string,
                                        documentRef: string): Promise<IssuedNumber> {
  const reserved = await client.POST(`${BASE}/reserve`, {
    params: { header: { "Idempotency-Key": key } },
    body: context,
  });
  if (reserved.error) throw new ProblemError(reserved.error);
  const number = "status_url" in reserved.data ? await poll(client, reserved.data.request_id)
    : reserved.data;
  if (!number.reservation) throw new Error(`${number.document_number} is not reserved`);
  const confirmed = await client.POST(`${BASE}/confirm`, {
    body: { token: number.reservation.token, document_ref: documentRef },
  });
  if (confirmed.error) throw new ProblemError(confirmed.error);
  return confirmed.data;
}

/** Look a number up: its state and the operations recorded on it. */
export async function lookUp(client: Client, documentNumber: string): Promise<string[]> {
  const { data, error } = await client.GET(`${BASE}/numbers/{document_number}`, {
    params: { path: { document_number: documentNumber } },
  });
  if (error) {
    if (error.code === "NOT_FOUND") return [];
    throw new ProblemError(error);
  }
  return [data.state, ...data.history.map((row) => `${row.operation} by ${row.actor ?? "system"}`)];
}

/** Every catalog entry of a kind, page by page. */
export async function catalog(client: Client, kind: Schemas["CatalogEntry"]["kind"]):
    Promise<Schemas["CatalogEntry"][]> {
  const entries: Schemas["CatalogEntry"][] = [];
  let cursor: string | undefined;
  do {
    const { data, error } = await client.GET(`${BASE}/catalog/{kind}`, {
      params: { path: { kind }, query: { cursor, limit: 2 } },
    });
    if (error) throw new ProblemError(error);
    entries.push(...data.items);
    cursor = data.next_cursor ?? undefined;
  } while (cursor !== undefined);
  return entries;
}

/** Every numbering config of a project, page by page. */
export async function configs(client: Client, project: string): Promise<Schemas["Config"][]> {
  const found: Schemas["Config"][] = [];
  let cursor: string | undefined;
  do {
    const { data, error } = await client.GET(`${BASE}/configs`, {
      params: { query: { project, cursor, limit: 1 } },
    });
    if (error) throw new ProblemError(error);
    found.push(...data.items);
    cursor = data.next_cursor ?? undefined;
  } while (cursor !== undefined);
  return found;
}

/** The whole tour; prints one JSON line the test reads. */
export async function main(baseUrl: string, token: string, run: string): Promise<void> {
  const client = connect(baseUrl, token);
  const letter: Context = {
    project: "LCBP3", correspondence_type: "LETTER", originator: "คคง.", recipient: "สคฉ.3",
    document_date: "2025-06-15",
  };
  const next = await preview(client, letter);
  const first = await generate(client, letter, `${run}-1`);
  const retried = await generate(client, letter, `${run}-1`);
  const submitted = await submit(client, letter, `${run}-2`);
  const confirmed = await reserveAndConfirm(client, letter, `${run}-3`, "DMS-2025-000123");
  const history = await lookUp(client, confirmed.document_number);
  const missing = await lookUp(client, "ไม่มี-0000");
  const reused = await client.POST(`${BASE}/generate`, {
    params: { header: { "Idempotency-Key": `${run}-1` } },
    body: { ...letter, document_ref: "another body" },
  });
  const organizations = await catalog(client, "organization");
  const projectConfigs = await configs(client, "LCBP3");
  console.log(JSON.stringify({
    preview: next, first: first.document_number, retried: retried.document_number,
    submitted: submitted.document_number, confirmed: [confirmed.document_number, confirmed.state],
    history, missing, reused: reused.error ? reused.error.code : null,
    explained: reused.error ? explain(reused.error) : null,
    organizations: organizations.map((e) => e.code), configs: projectConfigs.map((c) => c.id),
  }));
}

const [baseUrl, token, run] = process.argv.slice(2);
if (baseUrl && token && run) {
  main(baseUrl, token, run).catch((err: unknown) => {
    console.error(err);
    process.exit(1);
  });
}
