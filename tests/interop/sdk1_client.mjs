// The official TypeScript SDK 1.x client (2025-11-25), driven by tests/test_mcp_interop.py.
//
//   node sdk1_client.mjs '<json scenario>'
//
// scenario: {transport: "stdio"|"http", command?: [...], url?, token?, tasks: bool,
//            action: "list"|"call"|"rejoin", tool?, args?, taskId?, jobId?, decision?}
// Prints one JSON object per line: {"event": ..., ...}. With tasks, tools/call goes
// through the SDK's experimental task API (task-augmented tools/call, tasks/get,
// tasks/result); with a decision, the client declares elicitation and answers forms.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { CallToolResultSchema, ElicitRequestSchema } from "@modelcontextprotocol/sdk/types.js";

const scenario = JSON.parse(process.argv[2]);
const say = (event, data = {}) => process.stdout.write(JSON.stringify({ event, ...data }) + "\n");

function transport() {
  if (scenario.transport === "stdio") {
    const [command, ...args] = scenario.command;
    return new StdioClientTransport({ command, args, stderr: "inherit" });
  }
  const headers = scenario.token ? { Authorization: `Bearer ${scenario.token}` } : {};
  return new StreamableHTTPClientTransport(new URL(scenario.url), { requestInit: { headers } });
}

const capabilities = {};
if (scenario.tasks) capabilities.tasks = { list: {}, cancel: {} };
if (scenario.decision) capabilities.elicitation = { form: {} };
const client = new Client({ name: "interop-sdk1", version: "1.0.0" }, { capabilities });
if (scenario.decision) {
  client.setRequestHandler(ElicitRequestSchema, async (request) => {
    say("elicited", { message: request.params.message, meta: request.params._meta ?? null });
    return { action: "accept", content: scenario.decision };
  });
}

async function rejoinTask(taskId) {
  for (;;) {
    const task = await client.experimental.tasks.getTask(taskId);
    say("status", { status: task.status, statusMessage: task.statusMessage ?? null });
    if (["completed", "failed", "cancelled", "input_required"].includes(task.status)) break;
    await new Promise((r) => setTimeout(r, Math.min(task.pollInterval ?? 200, 200)));
  }
  const result = await client.experimental.tasks.getTaskResult(taskId, CallToolResultSchema);
  say("result", { result });
}

async function rejoinJob(jobId) {
  for (;;) {
    const answer = await client.callTool({ name: "await_result", arguments: { job_ids: [jobId], timeout_s: 10 } });
    if (answer.structuredContent.done.length) {
      say("result", { result: answer });
      return;
    }
  }
}

async function main() {
  const t = transport();
  await client.connect(t);
  if (t.pid) say("server", { pid: t.pid });
  if (scenario.action === "list") {
    const tools = await client.listTools();
    say("listed", { tools: tools.tools, capabilities: client.getServerCapabilities(), server: client.getServerVersion() });
  } else if (scenario.action === "call" && !scenario.tasks) {
    const result = await client.callTool({ name: scenario.tool, arguments: scenario.args });
    say("result", { result });
  } else if (scenario.action === "call") {
    await client.listTools(); // the SDK learns which tools take tasks
    const stream = client.experimental.tasks.callToolStream({ name: scenario.tool, arguments: scenario.args });
    for await (const message of stream) {
      if (message.type === "taskCreated") say("started", { taskId: message.task.taskId, task: message.task });
      else if (message.type === "taskStatus") say("status", { status: message.task.status, statusMessage: message.task.statusMessage ?? null });
      else if (message.type === "result") say("result", { result: message.result });
      else if (message.type === "error") say("error", { message: message.error.message });
    }
  } else if (scenario.action === "calls") {
    // Each call in turn; the SDK checks each answer against the tool's outputSchema.
    await client.listTools();
    for (const [name, args] of scenario.calls) {
      try {
        const result = await client.callTool({ name, arguments: args });
        say("answer", { name, isError: result.isError ?? false, structuredContent: result.structuredContent ?? null, text: result.content?.[0]?.text ?? null });
      } catch (error) {
        say("answer", { name, thrown: String(error.message) });
      }
    }
  } else if (scenario.action === "cancel") {
    // Start a task, find it with tasks/list, cancel it, cancel it again (refused).
    await client.listTools();
    const stream = client.experimental.tasks.callToolStream({ name: scenario.tool, arguments: scenario.args });
    const first = await stream.next();
    const taskId = first.value.task.taskId;
    say("started", { taskId });
    const listed = await client.experimental.tasks.listTasks();
    say("listed", { taskIds: listed.tasks.map((t) => t.taskId) });
    const cancelled = await client.experimental.tasks.cancelTask(taskId);
    say("cancelled", { task: cancelled });
    try {
      await client.experimental.tasks.cancelTask(taskId);
      say("cancelled-again");
    } catch (error) {
      say("refused", { code: error.code, message: error.message });
    }
    const task = await client.experimental.tasks.getTask(taskId);
    say("status", { status: task.status });
    await stream.return();
  } else if (scenario.action === "rejoin" && scenario.taskId) {
    await rejoinTask(scenario.taskId);
  } else if (scenario.action === "rejoin") {
    await rejoinJob(scenario.jobId);
  }
  await client.close();
}

main().catch((error) => {
  say("error", { message: String(error && error.message ? error.message : error) });
  process.exit(1);
});
