// The official Tasks client library (@modelcontextprotocol/ext-tasks) on the official
// TypeScript client 2.x, driven by tests/test_mcp_interop.py.
//
//   node ext_tasks_client.mjs '<json scenario>'
//
// scenario: {transport: "stdio"|"http", command?: [...], url?, token?,
//            era: "modern" (2026-07-28, the Tasks extension) | "legacy" (2025-11-25 core tasks),
//            action: "call"|"rejoin", tool?, args?, taskId?, decision?}
// Prints one JSON object per line: {"event": ..., ...}.
import { Client, StreamableHTTPClientTransport } from "@modelcontextprotocol/client";
import { StdioClientTransport } from "@modelcontextprotocol/client/stdio";
import {
  createApplicationInputHandler,
  createTaskSessionFromClient,
  resultFromTaskOutcome,
  toolDeclarationFromMcpTool,
} from "@modelcontextprotocol/ext-tasks/client";

const scenario = JSON.parse(process.argv[2]);
const say = (event, data = {}) => process.stdout.write(JSON.stringify({ event, ...data }) + "\n");
const MODERN = "2026-07-28";
const clientInfo = { name: "interop-ext-tasks", version: "1.0.0" };

// ext-tasks sends the task wire shapes below the SDK (which would reject a
// `resultType: "task"` answer): requests with our own ids on the same transport,
// whose responses we take before the SDK sees them.
function withRawDispatch(inner) {
  const pending = new Map();
  let next = 0;
  let sdkOnMessage;
  let sdkOnClose;
  inner.onmessage = (message, extra) => {
    if (message.id !== undefined && pending.has(message.id) && !("method" in message)) {
      const resolve = pending.get(message.id);
      pending.delete(message.id);
      resolve(message);
      return;
    }
    sdkOnMessage?.(message, extra);
  };
  inner.onclose = () => {
    for (const resolve of pending.values()) resolve({ error: { code: -32000, message: "Connection closed" } });
    pending.clear();
    sdkOnClose?.();
  };
  const dispatch = async (request) => {
    const id = `raw-${++next}`;
    const response = new Promise((resolve) => pending.set(id, resolve));
    await inner.send({ jsonrpc: "2.0", id, method: request.method, params: request.params });
    const message = await response;
    return message.error ? { kind: "error", error: message.error } : { kind: "result", result: message.result };
  };
  const transport = new Proxy(inner, {
    set(target, key, value) {
      if (key === "onmessage") sdkOnMessage = value;
      else if (key === "onclose") sdkOnClose = value;
      else target[key] = value;
      return true;
    },
    get(target, key) {
      if (key === "onmessage") return sdkOnMessage;
      if (key === "onclose") return sdkOnClose;
      const value = target[key];
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  return { transport, dispatch };
}

function baseTransport() {
  if (scenario.transport === "stdio") {
    const [command, ...args] = scenario.command;
    return new StdioClientTransport({ command, args, stderr: "inherit" });
  }
  const headers = scenario.token ? { Authorization: `Bearer ${scenario.token}` } : {};
  return new StreamableHTTPClientTransport(new URL(scenario.url), { requestInit: { headers } });
}

async function main() {
  const modern = scenario.era === "modern";
  const capabilities = {};
  if (scenario.decision) capabilities.elicitation = { form: {} };
  if (modern) capabilities.extensions = { "io.modelcontextprotocol/tasks": {} };
  const client = new Client(clientInfo, {
    capabilities,
    versionNegotiation: { mode: modern ? { pin: MODERN } : "legacy" },
  });
  const inner = baseTransport();
  const { transport, dispatch } = withRawDispatch(inner);
  await client.connect(transport);
  if (inner.pid) say("server", { pid: inner.pid });
  say("connected", { era: client.getProtocolEra(), capabilities: client.getServerCapabilities() ?? null });
  const session = createTaskSessionFromClient(client, {
    endpointId: "agent-tools-interop",
    ...(modern
      ? { rawDispatch: dispatch, v2RequestFraming: { protocolVersion: MODERN, clientInfo, clientCapabilities: capabilities } }
      : {}),
    tools: { currentTool: () => undefined },
    onInputRequest: createApplicationInputHandler({
      elicitation: async (request) => {
        say("elicited", { message: request.params.message });
        return { action: "accept", content: scenario.decision };
      },
    }),
    onError: (error) => say("background-error", { message: String(error) }),
  });
  try {
    let execution;
    if (scenario.action === "call") {
      const tools = await client.listTools();
      const tool = tools.tools.find((t) => t.name === scenario.tool);
      execution = await session.callTool(scenario.tool, scenario.args, {
        declaration: tool ? toolDeclarationFromMcpTool(tool) : undefined,
        task: { preference: "prefer" },
      });
      say("started", { taskId: execution.handle?.taskId ?? null, generation: execution.handle?.generation ?? null });
    } else {
      execution = await session.resumeTask({
        endpointId: "agent-tools-interop",
        generation: modern ? "v2" : "v1",
        taskId: scenario.taskId,
        originalOperation: "tools/call",
      });
    }
    const { outcome } = await execution.settle();
    say("result", { status: outcome.status, result: resultFromTaskOutcome(outcome) });
  } finally {
    await session.close();
    await client.close();
  }
}

main().catch((error) => {
  say("error", { message: String(error && error.message ? error.message : error), name: error?.name ?? null });
  process.exit(1);
});
