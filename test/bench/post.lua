-- wrk script: POST a webhook-sized JSON body (about 150 bytes), like the worker's
wrk.method = "POST"
wrk.body   = '{"eventType":"EmailOpens","eventDate":"2024-05-10T13:28:23.209375Z","messageId":123456,"subscriberId":7654321,"subscriberEmail":"user123456@example.com"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["webhook-id"] = "msg_123456"
wrk.headers["webhook-timestamp"] = "1715347703"
wrk.headers["webhook-signature"] = "v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4="
