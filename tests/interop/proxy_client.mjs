// The official TypeScript SDK 1.x client (2025-11-25) against `agent-tools proxy` (or
// straight against the upstream it wraps), driven by tests/test_proxy_interop.py.
//
//   node proxy_client.mjs '<json scenario>'
//
// scenario: {transport: "stdio"|"http", command?: [...], url?, tasks?: bool, steps: [...]}
// Each step runs in turn and prints one JSON line {"event": ..., ...}:
//   {do: "list"}                       -> listed {tools, server, capabilities}
//   {do: "call", name, args, outputSchema?, redeem?}
//                                      -> answer {name, result, schemaCheck} | {name, thrown}
//                                         (redeem: an answer that is a job id in the
//                                         background is awaited, and its result given)
//   {do: "await", jobId?, timeoutS?}   -> awaited {job}: await_result until the job is
//                                         done (jobId: else the last one an answer gave)
//   {do: "find"}                       -> found {jobs: [{job_id, status, kind}]}: list_jobs,
//                                         as a model finds a job id it never got
//   {do: "task", name, args}           -> task {taskId, task}, then taskResult {result}
//                                         (task-augmented tools/call, tasks/result)
//   {do: "cancel", jobId?}             -> cancelled {result}: cancel_job (else the last id)
//   {do: "many", name, args: [...]}    -> many {results}: one call per args, all at once
// The connection's server pid (stdio) comes first as {"event": "server", pid}.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { AjvJsonSchemaValidator } from "@modelcontextprotocol/sdk/validation/ajv";

const scenario = JSON.parse(process.argv[2]);
const say = (event, data = {}) => process.stdout.write(JSON.stringify({ event, ...data }) + "\n");

function transport() {
  if (scenario.transport === "stdio") {
    const [command, ...args] = scenario.command;
    return new StdioClientTransport({ command, args, stderr: "inherit" });
  }
  return new StreamableHTTPClientTransport(new URL(scenario.url));
}

const capabilities = scenario.tasks ? { tasks: { list: {}, cancel: {} } } : {};
const client = new Client({ name: "interop-proxy", version: "1.0.0" }, { capabilities });
let lastJobId = null;

async function awaitJob(jobId, timeoutS) {
  for (;;) {
    const answer = await client.callTool({ name: "await_result", arguments: { job_ids: [jobId], timeout_s: timeoutS } });
    if (answer.isError) throw new Error(`await_result failed: ${JSON.stringify(answer.content)}`);
    const [job] = answer.structuredContent.done;
    if (job) return job;
  }
}

async function step(s) {
  if (s.do === "list") {
    const { tools } = await client.listTools(); // also primes the SDK's output-schema checks
    say("listed", { tools, server: client.getServerVersion(), capabilities: client.getServerCapabilities() });
  } else if (s.do === "call") {
    try {
      // callTool checks the answer against CallToolResultSchema and, where the tool
      // declared one, its outputSchema: a wrong answer throws.
      let result = await client.callTool({ name: s.name, arguments: s.args });
      lastJobId = result.structuredContent?.job_id ?? lastJobId;
      if (s.redeem && result.structuredContent?.job_id && ["running", "waiting"].includes(result.structuredContent.status)) {
        result = (await awaitJob(result.structuredContent.job_id, 20)).result;
      }
      // outputSchema: check structuredContent with the validator the SDK itself uses (a
      // proxy lists no output schemas, so the caller brings the upstream's).
      const schemaCheck = s.outputSchema ? new AjvJsonSchemaValidator().getValidator(s.outputSchema)(result.structuredContent) : null;
      say("answer", { name: s.name, result, schemaCheck });
    } catch (error) {
      say("answer", { name: s.name, thrown: String(error.message ?? error) });
    }
  } else if (s.do === "await") {
    say("awaited", { job: await awaitJob(s.jobId ?? lastJobId, s.timeoutS ?? 20) });
  } else if (s.do === "find") {
    const answer = await client.callTool({ name: "list_jobs", arguments: {} });
    const jobs = answer.structuredContent.jobs.map(({ job_id, status, kind }) => ({ job_id, status, kind }));
    lastJobId = jobs[0]?.job_id ?? lastJobId;
    say("found", { jobs });
  } else if (s.do === "task") {
    const stream = client.experimental.tasks.callToolStream({ name: s.name, arguments: s.args });
    for await (const message of stream) {
      if (message.type === "taskCreated") say("task", { taskId: message.task.taskId, task: message.task });
      else if (message.type === "result") say("taskResult", { result: message.result });
      else if (message.type === "error") say("error", { message: message.error.message });
    }
  } else if (s.do === "cancel") {
    const result = await client.callTool({ name: "cancel_job", arguments: { job_id: s.jobId ?? lastJobId } });
    say("cancelled", { result });
  } else if (s.do === "many") {
    const results = await Promise.all(s.args.map((args) => client.callTool({ name: s.name, arguments: args })));
    say("many", { results });
  } else {
    throw new Error(`unknown step ${JSON.stringify(s)}`);
  }
}

async function main() {
  const t = transport();
  await client.connect(t);
  if (t.pid) say("server", { pid: t.pid });
  for (const s of scenario.steps) await step(s);
  say("finished");
  await client.close();
}

main().catch((error) => {
  say("error", { message: String(error && error.message ? error.message : error) });
  process.exit(1);
});
