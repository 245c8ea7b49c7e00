"""Analytic performance model (placeholder estimate; replaced by the exact model)."""

def _ceil_div(a, b):
    return -(-a // b)


def layer_cycles(v, cfg):
    R, C = cfg.rows, cfg.cols
    load = v["N"] * v["Tr_in"] * v["Tc_in"]
    tiles = []
    for tr in range(v["ntr"]):
        rows = v["rows_last"] if tr == v["ntr"] - 1 else v["Tr"]
        for tc in range(v["ntc"]):
            cols = v["cols_last"] if tc == v["ntc"] - 1 else v["Tc"]
            groups = _ceil_div(cols, C)
            if v["df"] == 0:
                tiles.append(v["MB"] * rows * groups * v["L"])
            elif v["df"] == 1:
                tiles.append(rows * groups * (R + v["KB"] * v["L"]))
            else:
                tiles.append(v["MB"] * (R + v["KB"] * max(rows * cols, v["Lmin"])))
    total = load
    for i, compute in enumerate(tiles):
        total += max(compute, load if i + 1 < len(tiles) else 0)
    return total
