/**
 * `GET /openapi.json`: the OpenAPI 3.1 document of the HTTP listener (docs/openapi.json, written by hand). It is
 * imported as a module, so a bundled or compiled build carries it, and serialised once.
 */
import doc from "../../docs/openapi.json" with { type: "json" };

/** Where the HTTP listener serves the document. */
export const OPENAPI_ROUTE = "/openapi.json";

const body = JSON.stringify(doc);

/** The document as a reply; a new Response each time, as a body can be read only once. */
export function openapiReply(): Response {
  return new Response(body, { headers: { "content-type": "application/json" } });
}
