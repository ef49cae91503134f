// One round trip with the official TypeScript SDK client: a second implementation, so a bug the
// Python SDK shares with itself cannot hide. Usage:
//   node roundtrip.mjs stdio <python> <config>      (starts `python -m mcp_keygate serve`)
//   node roundtrip.mjs http <url> <token>
// Prints one JSON line: {"tools": [...], "model": "...", "text": "...", "progress": N}.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const [mode, first, second] = process.argv.slice(2);
const transport =
  mode === "stdio"
    ? new StdioClientTransport({ command: first, args: ["-m", "mcp_keygate", "serve", "--config", second], env: process.env })
    : new StreamableHTTPClientTransport(new URL(first), {
        requestInit: { headers: { Authorization: `Bearer ${second}` } },
      });
const client = new Client({ name: "keygate-ts-roundtrip", version: "1.0.0" });
await client.connect(transport);
const tools = (await client.listTools()).tools.map((t) => t.name).sort();
let progress = 0;
const result = await client.callTool(
  { name: "complete", arguments: { prompt: "hello from TypeScript" } },
  undefined,
  { onprogress: () => { progress += 1; } },
);
if (result.isError) {
  console.error(JSON.stringify(result.content));
  process.exit(1);
}
const data = result.structuredContent;
console.log(JSON.stringify({ tools, model: data.model, text: data.text, progress }));
await client.close();
