# Hostile local clients against a relay with the default [listen] keys (issue 14): prints the
# relay's RSS and open descriptors with the hostile sockets open, and the status and seconds of
# a real batch sent then. It measures; it asserts nothing (relay/tests/e2e/hostage.rs does).
# Usage: python3 scripts/hostage-measure.py stalled|loris|idle [path/to/sluice-relay]
# (idle opens 15,000 sockets: raise `ulimit -n` first). Works in /tmp/hostage-m.
import socket, time, os, gzip, http.client, sys, subprocess
rel = sys.argv[2] if len(sys.argv) > 2 else 'target/debug/sluice-relay'
os.makedirs('/tmp/hostage-m', exist_ok=True)
def start():
    os.system('rm -rf /tmp/hostage-m/spool /tmp/hostage-m/addr')
    open('/tmp/hostage-m/relay.toml','w').write('[listen]\naddress="127.0.0.1:0"\naddress_file="/tmp/hostage-m/addr"\n[spool]\ndir="/tmp/hostage-m/spool"\n[[outputs]]\ntype="file"\npath="/tmp/hostage-m/out.log"\n')
    p = subprocess.Popen([rel,'--config','/tmp/hostage-m/relay.toml'], stdout=subprocess.DEVNULL, stderr=open('/tmp/hostage-m/err.log','w'))
    while not os.path.exists('/tmp/hostage-m/addr'): time.sleep(0.05)
    time.sleep(0.1)
    h,pt = open('/tmp/hostage-m/addr').read().strip().split(':')
    return p,(h,int(pt))
def rss(p):
    for l in open(f'/proc/{p.pid}/status'):
        if l.startswith('VmRSS'): return l.split()[1]+' kB'
def fds(p): return len(os.listdir(f'/proc/{p.pid}/fd'))
def batch(a, key):
    t=time.time()
    c=http.client.HTTPConnection(*a, timeout=60)
    c.request('POST','/v1/batches',body=gzip.compress(b'my.app.test hello\n'),headers={'Content-Encoding':'gzip','Idempotency-Key':key})
    r=c.getresponse(); r.read()
    return r.status, round(time.time()-t,3)
def head(key, n): return (f'POST /v1/batches HTTP/1.1\r\nHost: r\r\nContent-Encoding: gzip\r\nIdempotency-Key: {key}\r\nContent-Length: {n}\r\n\r\n').encode()
scenario=sys.argv[1]
p,a=start()
socks=[]
if scenario=='stalled':
    for i in range(8):
        s=socket.create_connection(a); s.sendall(head(f's{i}',16<<20)); s.sendall(b'\0'*(1<<20)); socks.append(s)
elif scenario=='loris':
    for i in range(1000):
        s=socket.create_connection(a); s.sendall(b'POST /v1/batches HTTP/1.1\r\nHost: r\r\n'); socks.append(s)
    for _ in range(5):
        for s in socks:
            try: s.send(b'X-a: b\r\n')
            except OSError: pass
        time.sleep(0.5)
elif scenario=='idle':
    for i in range(15000):
        try: socks.append(socket.create_connection(a, timeout=10))
        except OSError as e: print('connect', i, e, time.time()); break
time.sleep(1)
print(scenario, 'hostile sockets', len(socks), 'relay rss', rss(p), 'fds', fds(p), 'batch', batch(a, 'real-1'))
p.terminate(); p.wait()
