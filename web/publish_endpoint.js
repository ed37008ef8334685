// "Publish as endpoint": the graph open in the editor becomes a live API endpoint on this server.
//
// The user picks which widget inputs of the graph become request fields and names them; the request
// schema shown is the server's own (a dry run of POST /v1/admin/endpoints, so types, bounds, defaults
// and every refusal come from the same code that publishes), and Publish sends the same declaration
// for real. The editor's UI workflow is sent, not only its API prompt, so the endpoint exports as the
// very workflow the user edited (engine/endpoints/sharing.py). Whatever the server refuses (an unknown
// node, a missing model file, a bad field name) is shown in the dialog as the server worded it.
// "Import endpoint file" publishes a file such an endpoint was shared as, checked the same way.
import { api } from "../../scripts/api.js";
import { app } from "../../scripts/app.js";

const PUBLISH_COMMAND = "Engine.PublishAsEndpoint";
const IMPORT_COMMAND = "Engine.ImportEndpointFile";
const ADMIN_ROUTE = "/v1/admin/endpoints";
const DIALOG_ID = "engine-publish-dialog";
const STYLE_ID = "engine-publish-style";

const STYLE = `
#${DIALOG_ID} { width: min(900px, 92vw); max-height: 88vh; padding: 0; border: 1px solid var(--border-color, #444);
  border-radius: 8px; background: var(--comfy-menu-bg, #202020); color: var(--fg-color, #ddd); font: 13px sans-serif; }
#${DIALOG_ID}::backdrop { background: rgba(0, 0, 0, 0.5); }
#${DIALOG_ID} form { display: flex; flex-direction: column; gap: 10px; padding: 16px; }
#${DIALOG_ID} h2 { margin: 0; font-size: 16px; }
#${DIALOG_ID} .engine-row { display: flex; gap: 12px; align-items: center; flex-wrap: wrap; }
#${DIALOG_ID} input[type=text], #${DIALOG_ID} select { background: var(--comfy-input-bg, #111);
  color: var(--input-text, #ddd); border: 1px solid var(--border-color, #444); border-radius: 4px; padding: 3px 6px; }
#${DIALOG_ID} .engine-scroll { max-height: 34vh; overflow: auto; border: 1px solid var(--border-color, #444); }
#${DIALOG_ID} table { border-collapse: collapse; width: 100%; }
#${DIALOG_ID} th, #${DIALOG_ID} td { text-align: left; padding: 3px 6px; border-bottom: 1px solid var(--border-color, #333);
  vertical-align: middle; }
#${DIALOG_ID} td.engine-value { max-width: 260px; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; opacity: 0.8; }
#${DIALOG_ID} button { background: var(--comfy-input-bg, #333); color: var(--fg-color, #ddd);
  border: 1px solid var(--border-color, #555); border-radius: 4px; padding: 5px 12px; cursor: pointer; }
#${DIALOG_ID} button.engine-primary { background: #2563eb; border-color: #2563eb; color: #fff; }
#${DIALOG_ID} .engine-error { color: var(--error-text, #ff6b6b); white-space: pre-wrap; }
#${DIALOG_ID} .engine-ok { color: #4ade80; }
#${DIALOG_ID} pre { max-height: 20vh; overflow: auto; background: var(--comfy-input-bg, #111); padding: 6px; margin: 4px 0 0; }
`;

function element(tag, properties = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(properties)) {
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (key in node) node[key] = value;
    else node.setAttribute(key, value);
  }
  node.append(...children);
  return node;
}

function isLink(value) {
  return Array.isArray(value) && value.length === 2 && typeof value[0] === "string";
}

function nodeDefinition(classType) {
  return window.LiteGraph?.registered_node_types?.[classType]?.nodeData;
}

function nodeTitle(id, node) {
  const shown = /^\d+$/.test(id) ? app.graph.getNodeById(Number(id)) : null;
  return shown?.title || node._meta?.title || node.class_type;
}

// Every input of the API prompt that holds a value (not a link): the widgets a request may set.
function widgetInputs(prompt) {
  const rows = [];
  for (const [id, node] of Object.entries(prompt)) {
    for (const [input, value] of Object.entries(node.inputs)) {
      if (isLink(value) || (typeof value === "object" && value !== null)) continue;
      rows.push({ id, input, value, classType: node.class_type, title: nodeTitle(id, node) });
    }
  }
  return rows;
}

// The nodes whose images an endpoint can answer with (output nodes taking an `images` input).
function imageOutputs(prompt) {
  return Object.entries(prompt)
    .filter(([, node]) => {
      const definition = nodeDefinition(node.class_type);
      const inputs = definition?.inputs ?? {};
      return definition?.output_node && ("images" in inputs || "images" in node.inputs);
    })
    .map(([id, node]) => ({ id, title: nodeTitle(id, node), classType: node.class_type }));
}

function defaultNames(rows) {
  const counts = {};
  for (const row of rows) counts[row.input] = (counts[row.input] ?? 0) + 1;
  return rows.map((row) => {
    const base = counts[row.input] > 1 ? `${row.input}_${row.id}` : row.input;
    return base.replace(/[^A-Za-z0-9_]/g, "_").replace(/^(?=[0-9])/, "_").slice(0, 64);
  });
}

function shortValue(value) {
  const text = typeof value === "string" ? JSON.stringify(value) : String(value);
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

// `body` is JSON text: a file is sent as it was read, since parsing and writing it again in the page
// would round integers beyond a double's (a seed's maximum, 2**64 - 1) and change what it declares.
async function callAdmin(path, body, params = {}) {
  const query = new URLSearchParams(params).toString();
  const url = api.fileURL(path) + (query ? `?${query}` : "");
  let response;
  try {
    response = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body,
    });
  } catch (error) {
    return { ok: false, status: 0, error: `the server could not be reached: ${error}` };
  }
  const text = await response.text();
  let data = null;
  try {
    data = JSON.parse(text);
  } catch {
    data = null;
  }
  if (!response.ok) {
    const message = data?.error ?? `${response.status} ${response.statusText}`;
    return { ok: false, status: response.status, error: message };
  }
  return { ok: true, status: response.status, data, shown: JSON.parse(text, exactIntegers) };
}

// Bounds such as a seed's 2**64 - 1 are beyond a double's exact integers: what is shown keeps the
// digits the server sent (JSON.parse's source text), as a string marked for `schemaJson` to unquote.
const EXACT = "\uE000exact:"; // a private-use character, which JSON.stringify leaves as it is

function exactIntegers(key, value, context) {
  if (typeof value === "number" && !Number.isSafeInteger(value) && /^-?\d+$/.test(context?.source ?? "")) {
    return EXACT + context.source;
  }
  return value;
}

function shownValue(value) {
  return typeof value === "string" && value.startsWith(EXACT) ? value.slice(EXACT.length) : value;
}

function schemaJson(schema) {
  const marked = new RegExp(`"${EXACT}(-?\\d+)"`, "g");
  return JSON.stringify(schema, null, 2).replace(marked, "$1");
}

function schemaTable(schema) {
  const required = new Set(schema.required ?? []);
  const head = element("tr", {}, ["Field", "Type", "Required", "Default", "Range / choices", "Description"].map(
    (text) => element("th", { textContent: text }),
  ));
  const rows = Object.entries(schema.properties ?? {}).map(([name, property]) => {
    let range = "";
    if (property.enum) range = `${property.enum.length} choices`;
    else if (property.minimum !== undefined || property.maximum !== undefined)
      range = `${shownValue(property.minimum) ?? "…"} to ${shownValue(property.maximum) ?? "…"}`;
    else if (property.maxLength !== undefined) range = `up to ${property.maxLength} characters`;
    return element("tr", { dataset: { field: name } }, [
      element("td", { textContent: name }),
      element("td", { textContent: property.type ?? "" }),
      element("td", { textContent: required.has(name) ? "yes" : "" }),
      element("td", { className: "engine-value", textContent: property.default === undefined ? "" : shortValue(shownValue(property.default)) }),
      element("td", { textContent: range }),
      element("td", { className: "engine-value", textContent: property.description ?? "" }),
    ]);
  });
  return element("table", { className: "engine-schema" }, [element("thead", {}, [head]), element("tbody", {}, rows)]);
}

function ensureStyle() {
  if (!document.getElementById(STYLE_ID)) document.head.append(element("style", { id: STYLE_ID, textContent: STYLE }));
}

// The dialog shell both commands share: a title, the controls, action buttons, then the server's
// answer (a message, and the endpoint's request schema when there is one).
function endpointDialog(title, controls, actions) {
  ensureStyle();
  document.getElementById(DIALOG_ID)?.remove();
  const message = element("div", { className: "engine-message", role: "status" });
  const schemaBox = element("div", { className: "engine-schema-box" });
  const closeButton = element("button", { type: "button", name: "close", textContent: "Close" });
  const buttons = actions.map(([name, label, primary]) =>
    element("button", { type: "button", name, textContent: label, className: primary ? "engine-primary" : "" }),
  );
  const dialog = element("dialog", { id: DIALOG_ID }, [
    element("form", { method: "dialog" }, [
      element("h2", { textContent: title }),
      ...controls,
      element("div", { className: "engine-row" }, [...buttons, closeButton]),
      message,
      schemaBox,
    ]),
  ]);

  function show(kind, text, extra = []) {
    message.className = `engine-message ${kind === "error" ? "engine-error" : "engine-ok"}`;
    message.replaceChildren(text, ...extra);
  }

  // `endpoint` as parsed for showing (exactIntegers)
  function showSchema(endpoint) {
    schemaBox.replaceChildren(
      element("h3", { textContent: `Request schema of ${endpoint.id}` }),
      schemaTable(endpoint.schema),
      element("details", {}, [
        element("summary", { textContent: "JSON Schema" }),
        element("pre", { className: "engine-schema-json", textContent: schemaJson(endpoint.schema) }),
      ]),
    );
  }

  // Send one admin request (`body`: JSON text) with the buttons held, and show what the server answered.
  async function submit(path, body, dryRun, params, doneVerb) {
    for (const button of buttons) button.disabled = true;
    show("ok", dryRun ? "Asking the server to check it..." : "Sending it to the server...");
    try {
      const answer = await callAdmin(path, body, { ...params, ...(dryRun ? { dry_run: "true" } : {}) });
      if (!answer.ok) {
        schemaBox.replaceChildren();
        show("error", `The server refused it (${answer.status}): ${answer.error}`);
        return;
      }
      const endpoint = answer.data.endpoint;
      showSchema(answer.shown.endpoint);
      const replacing = answer.data.replaced ? " (it replaces the published one)" : "";
      if (dryRun) {
        show("ok", `This is the request schema ${endpoint.id} will have${replacing}.`);
        return;
      }
      const links = Object.values(endpoint.urls).flat().map((url) =>
        element("div", {}, [element("a", { href: url, textContent: url, target: "_blank", rel: "noopener" })]),
      );
      const exportPath = `${ADMIN_ROUTE}/${endpoint.id.split("/").map(encodeURIComponent).join("/")}/export`;
      links.push(element("div", {}, [element("a", {
        href: api.fileURL(exportPath), download: `${endpoint.id.replace("/", "--")}.json`,
        className: "engine-export", textContent: "Download as a shareable workflow file",
      })]));
      show("ok", `${doneVerb} ${endpoint.id}${replacing}: POST a JSON body to`, links);
    } finally {
      for (const button of buttons) button.disabled = false;
    }
  }

  closeButton.addEventListener("click", () => dialog.close());
  dialog.addEventListener("close", () => dialog.remove());
  // Keys typed into the dialog are the dialog's: the editor's shortcuts (delete, undo...) must not act.
  dialog.addEventListener("keydown", (event) => event.stopPropagation());
  document.body.append(dialog);
  dialog.showModal();
  return { buttons, show, submit };
}

async function openPublishDialog() {
  const { output: prompt, workflow } = await app.graphToPrompt();
  const rows = widgetInputs(prompt);
  const names = defaultNames(rows);
  const outputs = imageOutputs(prompt);

  const nameInput = element("input", { type: "text", name: "endpoint-name", value: "my-endpoint", size: 24 });
  const titleInput = element("input", { type: "text", name: "endpoint-title", placeholder: "Title (optional)", size: 30 });
  const replaceBox = element("input", { type: "checkbox", name: "replace" });
  const outputSelect = element(
    "select",
    { name: "output-node" },
    outputs.map((item) => element("option", { value: item.id, textContent: `#${item.id} ${item.title}` })),
  );
  const preferred = outputs.find((item) => item.classType === "SaveImage") ?? outputs[0];
  if (preferred) outputSelect.value = preferred.id;

  const widgetRows = rows.map((row, index) => {
    const use = element("input", { type: "checkbox", name: "use" });
    const field = element("input", { type: "text", name: "field-name", value: names[index], size: 16 });
    const required = element("input", { type: "checkbox", name: "required" });
    row.controls = { use, field, required };
    return element("tr", { dataset: { node: row.id, input: row.input } }, [
      element("td", {}, [use]),
      element("td", { textContent: `#${row.id} ${row.title}` }),
      element("td", { textContent: row.input }),
      element("td", { className: "engine-value", textContent: shortValue(row.value), title: String(row.value) }),
      element("td", {}, [field]),
      element("td", {}, [required]),
    ]);
  });
  const widgetTable = element("table", { className: "engine-widgets" }, [
    element("thead", {}, [
      element("tr", {}, ["Field", "Node", "Input", "Value now", "Request field name", "Required"].map(
        (text) => element("th", { textContent: text }),
      )),
    ]),
    element("tbody", {}, widgetRows),
  ]);

  const { buttons: [previewButton, publishButton], show, submit } = endpointDialog(
    "Publish as endpoint",
    [
      element("div", { className: "engine-row" }, [
        element("label", {}, ["Endpoint name ", nameInput]),
        titleInput,
        element("label", {}, ["Answer with the images of ", outputSelect]),
        element("label", {}, [replaceBox, " Replace a published one"]),
      ]),
      element("div", { textContent: "Pick the widgets a request may set, and name each field:" }),
      element("div", { className: "engine-scroll" }, [widgetTable]),
    ],
    [["preview", "Preview schema", false], ["publish", "Publish", true]],
  );

  // The declaration (engine/endpoints/publish.py) of what the dialog holds; null (and a message) if
  // nothing is picked, the one thing checked here: everything else is the server's to judge.
  function declaration() {
    const fields = {};
    for (const row of rows) {
      const { use, field, required } = row.controls;
      if (!use.checked) continue;
      const name = field.value.trim();
      if (name in fields) {
        show("error", `Two widgets are both named "${name}": give each field its own name.`);
        return null;
      }
      fields[name] = { input: [row.id, row.input], ...(required.checked ? { required: true } : {}) };
    }
    if (Object.keys(fields).length === 0) {
      show("error", "Pick at least one widget to become a request field.");
      return null;
    }
    const body = { name: nameInput.value.trim(), workflow, fields, replace: replaceBox.checked };
    if (titleInput.value.trim()) body.title = titleInput.value.trim();
    if (outputSelect.value) body.output = { node: outputSelect.value, format: "png" };
    return body;
  }

  for (const [button, dryRun] of [[previewButton, true], [publishButton, false]]) {
    button.addEventListener("click", () => {
      const body = declaration();
      if (body !== null) submit(ADMIN_ROUTE, JSON.stringify(body), dryRun, {}, "Published");
    });
  }
}

// A shared endpoint file (an editor workflow whose extra.engine_endpoint declares the endpoint, as
// the export link downloads it) published on this server; the server checks it against its nodes
// and models and names what it lacks.
function openImportDialog() {
  const fileInput = element("input", { type: "file", name: "endpoint-file", accept: ".json,application/json" });
  const nameInput = element("input", {
    type: "text", name: "endpoint-name", placeholder: "the file's name (optional)", size: 24,
  });
  const replaceBox = element("input", { type: "checkbox", name: "replace" });
  const { buttons, show, submit } = endpointDialog(
    "Import an endpoint file",
    [
      element("div", { className: "engine-row" }, [fileInput]),
      element("div", { className: "engine-row" }, [
        element("label", {}, ["Publish it as ", nameInput]),
        element("label", {}, [replaceBox, " Replace a published one"]),
      ]),
    ],
    [["check", "Check", false], ["import", "Import", true]],
  );
  for (const [button, dryRun] of [[buttons[0], true], [buttons[1], false]]) {
    button.addEventListener("click", async () => {
      const [file] = fileInput.files;
      if (!file) {
        show("error", "Choose an endpoint file first.");
        return;
      }
      const text = await file.text();
      try {
        JSON.parse(text);
      } catch (error) {
        show("error", `${file.name} is not JSON: ${error.message}`);
        return;
      }
      const params = { replace: String(replaceBox.checked) };
      if (nameInput.value.trim()) params.name = nameInput.value.trim();
      submit(`${ADMIN_ROUTE}/import`, text, dryRun, params, "Imported");
    });
  }
}

app.registerExtension({
  name: "engine.publishAsEndpoint",
  commands: [
    {
      id: PUBLISH_COMMAND,
      label: "Publish as endpoint",
      menubarLabel: "Publish as endpoint",
      icon: "pi pi-cloud-upload",
      function: openPublishDialog,
    },
    {
      id: IMPORT_COMMAND,
      label: "Import endpoint file",
      menubarLabel: "Import endpoint file",
      icon: "pi pi-file-import",
      function: openImportDialog,
    },
  ],
  menuCommands: [{ path: ["Workflow"], commands: [PUBLISH_COMMAND, IMPORT_COMMAND] }],
});
