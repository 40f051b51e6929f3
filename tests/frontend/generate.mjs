// TypeScript types from Switchboard's OpenAPI document, with openapi-typescript's Node API.
// Usage: node generate.mjs openapi.json switchboard.ts
//
// openapi-typescript writes a schema whose array items refer to the schema itself as
// `components["schemas"]["JsonValue"][]` inside the `components` interface, and TypeScript
// refuses that (TS2502, openapi-typescript issue #1603); a recursive top-level alias is fine.
// So the document's JsonValue (any JSON without NUL characters) becomes that alias.
import fs from "node:fs";
import { pathToFileURL } from "node:url";
import openapiTS, { astToString } from "openapi-typescript";
import ts from "typescript";

const [input, output] = process.argv.slice(2);
const jsonValue = ts.factory.createTypeReferenceNode("JsonValue");
const ast = await openapiTS(pathToFileURL(input), {
  transform(_schema, metadata) {
    return metadata.path === "#/components/schemas/JsonValue" ? jsonValue : undefined;
  },
});
const alias =
  "export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };\n\n";
fs.writeFileSync(output, alias + astToString(ast));
