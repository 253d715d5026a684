// Score prompts with an ONNX artifact from Node alone, as a user without Python would:
// tokenizer.json + tokenizer_config.json read by @huggingface/tokenizers, model.onnx run by onnxruntime-node.
//
//   node score.mjs ARTIFACT_DIR PROMPTS.json left|right [--alone]
//
// PROMPTS.json is a list of prompt texts already rendered in the model's template (the tokenizer adds
// nothing). They are scored as one batch padded to the longest with the tokenizer's pad token on the given
// side (attention_mask 1 on real tokens); with --alone each is also scored in a batch of its own.
// Prints {"logits": [...], "ids": [[...], ...], "alone": [...]}: one logit per prompt (score = sigmoid(logit)),
// the unpadded token ids, and the single-row logits when asked.
//
// Packages resolve from this folder's node_modules (npm ci --ignore-scripts here), or from the folder
// $RERANK_EXPORT_NODE_DIR where npm ci ran (the tests install there, outside the repository).
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join, resolve } from "node:path";

const require = process.env.RERANK_EXPORT_NODE_DIR
  ? createRequire(join(resolve(process.env.RERANK_EXPORT_NODE_DIR), "package.json"))
  : createRequire(import.meta.url);
const { Tokenizer } = require("@huggingface/tokenizers");
const ort = require("onnxruntime-node");

function usage(message) {
  process.stderr.write(`${message}\nusage: node score.mjs ARTIFACT_DIR PROMPTS.json left|right [--alone]\n`);
  process.exit(2);
}

const [folder, promptsPath, side, ...rest] = process.argv.slice(2);
if (!folder || !promptsPath || !["left", "right"].includes(side)) usage("missing or bad arguments");
const alone = rest.includes("--alone");

const readJson = (path) => JSON.parse(readFileSync(path, "utf8"));
const config = readJson(join(folder, "tokenizer_config.json"));
const tokenizer = new Tokenizer(readJson(join(folder, "tokenizer.json")), config);
const padToken = typeof config.pad_token === "string" ? config.pad_token : config.pad_token?.content;
const padId = padToken === undefined ? undefined : tokenizer.token_to_id(padToken);
if (padId === undefined) usage(`${folder}/tokenizer_config.json names no pad token in the vocabulary`);

const prompts = readJson(promptsPath);
if (!Array.isArray(prompts) || prompts.length === 0 || !prompts.every((p) => typeof p === "string")) {
  usage(`${promptsPath} must hold a non-empty list of prompt texts`);
}
const ids = prompts.map((text) => tokenizer.encode(text, { add_special_tokens: false }).ids);

const session = await ort.InferenceSession.create(join(folder, "model.onnx"), {
  executionProviders: ["cpu"],
  logSeverityLevel: 3, // errors only: the optional prefix inputs' initializers draw a warning each
});

async function logits(rows) {
  const width = Math.max(...rows.map((r) => r.length));
  const inputIds = new BigInt64Array(rows.length * width).fill(BigInt(padId));
  const mask = new BigInt64Array(rows.length * width); // zeros: padding
  rows.forEach((row, i) => {
    const start = i * width + (side === "left" ? width - row.length : 0);
    row.forEach((id, j) => {
      inputIds[start + j] = BigInt(id);
      mask[start + j] = 1n;
    });
  });
  const dims = [rows.length, width];
  const out = await session.run(
    { input_ids: new ort.Tensor("int64", inputIds, dims), attention_mask: new ort.Tensor("int64", mask, dims) },
    ["logit"],
  );
  return Array.from(out.logit.data, Number);
}

const result = { logits: await logits(ids), ids };
if (alone) {
  result.alone = [];
  for (const row of ids) result.alone.push((await logits([row]))[0]);
}
process.stdout.write(JSON.stringify(result) + "\n");
