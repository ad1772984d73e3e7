import pickle, hashlib, json
from collections import OrderedDict, Counter
def small():
    shared = [1]
    return {'a': 1, 'b': [1.5, -2, 2**40, -2**70, True, None, 0.0, -0.0, 255, 256, 65535, 65536, -1, 2**31-1, 2**31, -2**31, -2**31-1, 2**63],
            't1': (1,), 't2': (1, 2), 't3': (1, 2, 3), 't4': (1, 2, 3, 4), 'e': (), 's': 'h\u00e9llo \u20ac \U0001f600', 'by': b'\x00\xff\x80', 'eb': [],
            'od': OrderedDict([('x', 1), ('y', (2.5,))]), 'od1': OrderedDict([('x', 1)]), 'od0': OrderedDict(), 'set': {7}, 'cnt': Counter({'a': 2}),
            'x': shared, 'y': shared, 'ed': {}, 'ints': {0: 'zero', 1: 'one'}, 'tk': {(1, 'a'): 2}}
cases = {}
for proto in (2, 3, 4, 5):
    cases[f"small-p{proto}"] = pickle.dumps(small(), protocol=proto).hex()
rec = []; rec.append(rec)
cases["recursive-list-p2"] = pickle.dumps(rec, protocol=2).hex()
big = {"list1001": list(range(1001)), "dict2000": {str(i): i for i in range(2000)}, "od1001": OrderedDict((str(i), i) for i in range(1001)), "list1000": list(range(1000)), "dict1001": {str(i): i for i in range(1001)}}
bigcases = {k: {"sha256": hashlib.sha256(pickle.dumps(v, protocol=2)).hexdigest(), "length": len(pickle.dumps(v, protocol=2))} for k, v in big.items()}
print(json.dumps({"cases": cases, "big": bigcases}, indent=1))
