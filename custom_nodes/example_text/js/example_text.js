// A front-end extension shipped by a custom node package (served at /extensions/example_text/).
// The colour is set on each node as it is created: the editor keeps a node's colour in per-instance
// state behind an accessor, so assigning it on the class prototype (beforeRegisterNodeDef) throws.
import { app } from "../../scripts/app.js";

app.registerExtension({
  name: "engine.example_text",
  nodeCreated(node) {
    if (node.comfyClass === "ExampleTextCase") {
      node.color = "#335";
    }
  },
});
