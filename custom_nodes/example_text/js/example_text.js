// A front-end extension shipped by a custom node package (served at /extensions/example_text/).
import { app } from "../../scripts/app.js";

app.registerExtension({
  name: "engine.example_text",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name === "ExampleTextCase") {
      nodeType.prototype.color = "#335";
    }
  },
});
