/** The ceiling for the HTTP benchmark: Deno.serve reading the body and answering 200, nothing else. */
const port = Number(Deno.args[0]);
Deno.serve({ hostname: "127.0.0.1", port, onListen: () => {} }, async (req) => {
  await req.arrayBuffer();
  return new Response(null, { status: 200 });
});
