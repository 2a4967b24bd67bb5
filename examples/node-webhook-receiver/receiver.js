// A product's endpoint for meter's webhooks: verify the signature (Standard Webhooks), skip a
// redelivery by its webhook-id, act on the event. Prints one JSON line per event it accepts.
//
//   METER_WEBHOOK_SECRET=whsec_... node receiver.js --port 8787
const http = require("node:http");
const { Webhook } = require("standardwebhooks");

const webhook = new Webhook(process.env.METER_WEBHOOK_SECRET);
const port = Number(process.argv[process.argv.indexOf("--port") + 1] || 8787);
const seen = new Set(); // a real product keeps these in its database, with what it did

http
  .createServer((request, response) => {
    let body = "";
    request.on("data", (chunk) => (body += chunk));
    request.on("end", () => {
      let event;
      try {
        event = webhook.verify(body, request.headers); // throws on a bad signature or an old timestamp
      } catch (error) {
        response.writeHead(400).end();
        return;
      }
      const id = request.headers["webhook-id"];
      if (!seen.has(id)) {
        seen.add(id);
        const { account_id, sequence, data, balance } = event.data;
        if (event.type === "purchase.credited") tell(account_id, `You bought ${data.tokens.toLocaleString("en")} tokens`);
        if (event.type === "balance.warning" && data.level === "90") tell(account_id, "You have used 90 % of your tokens");
        console.log(JSON.stringify({ id, type: event.type, account_id, sequence, available: balance.available }));
      }
      response.writeHead(204).end(); // 2xx: delivered; anything else is retried
    });
  })
  .listen(port, "127.0.0.1", () => console.log(JSON.stringify({ listening: port })));

function tell(accountId, message) {
  console.log(JSON.stringify({ tell: accountId, message }));
}
