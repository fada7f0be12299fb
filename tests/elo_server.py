"""A local chat-completions server for the judge tests and the benchmark.

It speaks enough of the OpenAI API for the `openai` client (POST .../chat/completions), listens on 127.0.0.1 on a
free port, answers with deterministic verdicts derived from the two answers in the prompt, and can be told to fail:
per request number (`faults={3: ('429', 1)}`), or through `on_request(n, body)`, which may return a fault. It counts
every request it receives and every request it answered, by a hash of the request body. It stops by itself after
`lifetime` seconds even if nobody calls `stop()`.
"""
import hashlib, json, re, threading, time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

def default_verdict(messages: list) -> str:
    "Scores from hashes of the two answers; math reviews end on a Python tuple, as GPT-4 answered the math prompt."
    user = messages[-1]['content']
    a1 = user.split("[The Start of Assistant 1's Answer]\n")[1].split("\n\n[The End of Assistant 1's Answer]")[0]
    a2 = user.split("[The Start of Assistant 2's Answer]\n")[1].split("\n\n[The End of Assistant 2's Answer]")[0]
    s1, s2 = (1 + int(hashlib.sha256(a.encode()).hexdigest(), 16) % 10 for a in (a1, a2))
    if 'Python tuple' in user: return f'First, I will solve the problem independently.\nAssistant 1: {s1}/10\nAssistant 2: {s2}/10\nOutput: ({s1}, {s2})'
    return f'{s1} {s2}\nAssistant 1 scores {s1} and Assistant 2 scores {s2}.'

class ChatServer:
    def __init__(self, latency=0.0, faults=None, verdict=default_verdict, on_request=None, lifetime=300.0):
        self.latency, self.faults, self.verdict, self.on_request = latency, dict(faults or {}), verdict, on_request
        self.lock, self.n = threading.Lock(), 0
        self.received, self.answered, self.auth = Counter(), Counter(), Counter()
        self.frozen = False                  # while set, every request is dropped unanswered
        self._stop, self.deadline = threading.Event(), time.monotonic() + lifetime
        server = self
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a): pass
            def do_POST(self): server._handle(self)
        self.httpd = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.httpd.daemon_threads, self.httpd.timeout = True, 0.1
        self.port = self.httpd.server_address[1]
        self.url = f'http://127.0.0.1:{self.port}/v1'
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self._stop.is_set() and time.monotonic() < self.deadline: self.httpd.handle_request()
        self.httpd.server_close()

    def stop(self):
        self._stop.set(); self.thread.join(5)

    def __enter__(self): return self
    def __exit__(self, *a): self.stop()

    @property
    def requests(self) -> int: return sum(self.received.values())
    @property
    def repeated_answers(self) -> int: return sum(c - 1 for c in self.answered.values() if c > 1)

    def _send(self, h, status, obj, headers=()):
        data = json.dumps(obj).encode()
        h.send_response(status)
        h.send_header('Content-Type', 'application/json'); h.send_header('Content-Length', str(len(data)))
        for k, v in headers: h.send_header(k, v)
        h.end_headers(); h.wfile.write(data)

    def _handle(self, h):
        body = h.rfile.read(int(h.headers.get('Content-Length', 0)))
        key = hashlib.sha256(body).hexdigest()
        with self.lock:
            self.n += 1; n = self.n
            self.received[key] += 1; self.auth[h.headers.get('Authorization', '')] += 1
        fault = self.faults.pop(n, None)
        if self.on_request and fault is None: fault = self.on_request(n, body)
        if self.frozen: fault = 'drop'
        try:
            if self.latency: time.sleep(self.latency)
            kind, arg = (fault, None) if not isinstance(fault, tuple) else fault
            if kind == 'drop': h.close_connection = True; return
            if kind == 'timeout': time.sleep(arg or 2.0); return
            if kind == '429': return self._send(h, 429, {'error': {'message': 'rate limited', 'type': 'rate_limit'}}, [('Retry-After', str(arg or 1))])
            if kind in ('500', '503'): return self._send(h, int(kind), {'error': {'message': 'server error', 'type': 'server_error'}})
            if kind == '401': return self._send(h, 401, {'error': {'message': 'bad key', 'type': 'invalid_request_error'}})
            if kind == 'html':                                    # a proxy's login page, answered with status 200
                page = b'<html><body>Please sign in</body></html>'
                h.send_response(200); h.send_header('Content-Type', 'text/html'); h.send_header('Content-Length', str(len(page)))
                h.end_headers(); h.wfile.write(page); return
            req = json.loads(body)
            content = 'I am not able to compare these answers.' if kind == 'malformed' else self.verdict(req['messages'])
            self._send(h, 200, {'id': f'chatcmpl-{n}', 'object': 'chat.completion', 'created': int(time.time()), 'model': req['model'],
                                'choices': [{'index': 0, 'message': {'role': 'assistant', 'content': content}, 'finish_reason': 'stop'}],
                                'usage': {'prompt_tokens': len(body) // 4, 'completion_tokens': len(content) // 4, 'total_tokens': len(body) // 4 + len(content) // 4}})
            with self.lock: self.answered[key] += 1
        except (BrokenPipeError, ConnectionResetError): pass
