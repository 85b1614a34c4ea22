-- wrk script for bench/relay/run.sh: every request POSTs one JSON event
-- (a typical small webhook payload) to the relay.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"type":"order.created","order":{"id":184467,"currency":"EUR","total":"129.90",' ..
           '"items":[{"sku":"A-1021","qty":2},{"sku":"B-77","qty":1}]},"customer":"c_5521"}'
