// On a browser's first visit, replace the editor's built-in default graph (whose model files this
// server does not have) with a graph that runs on this server's models. Once per browser: after that
// the editor restores whatever the user last had open.
import { api } from "../../scripts/api.js";
import { app } from "../../scripts/app.js";

const DONE = "engine.firstRunGraphShown";
const POLL_MS = 50;

// The extension's setup runs before the editor has a canvas and loads its default graph; replacing
// the graph earlier would fail (no canvas) or be overwritten (the default loads after), so wait for both.
async function defaultGraphShown() {
  while (!(app.canvas && app.graph && app.graph.nodes.length > 0)) {
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

async function showFirstRunGraph() {
  const response = await api.fetchApi("/engine/first_run_workflow");
  if (!response.ok) return; // no endpoint has its models: keep the editor's own default
  const workflow = await response.json();
  await defaultGraphShown();
  await app.loadGraphData(workflow);
  localStorage.setItem(DONE, "1");
}

app.registerExtension({
  name: "engine.firstRunGraph",
  setup() {
    if (!localStorage.getItem(DONE)) showFirstRunGraph();
  },
});
