def from_keras(*a, **k): raise NotImplementedError
def from_config(c): raise NotImplementedError
