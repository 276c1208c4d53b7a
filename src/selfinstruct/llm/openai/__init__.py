"""OpenAI-compatible servers: one (client), several serving the same model (endpoint_pool),
and a provider's Files and Batches API (batches).

- wire: a request as the wire carries it (sampling parameters, messages, the JSON body);
- answer: a 200's body -> a `Completion`, or why it is no answer;
- output_modes: how a chat server is asked for JSON, and the one function that settles it.
"""
