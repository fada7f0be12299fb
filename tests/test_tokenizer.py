"Token ids as upstream's slow SentencePiece tokenizer gives them: edge cases, the shipped rows, the reference rows."
import pytest
import sentencepiece as spm
from transformers import AutoTokenizer
from conftest import reference
from anima_nb.core import read_json
from anima_nb.data import load_pairs, ALPACA_PROMPT_DICT
from anima_nb.models import train_demo_tokenizer, load_tokenizer, ASSETS
from anima_nb.train import encode_pair

EDGES = [' 空格', '  两个空格', ' hello', ' \n换行', ' ', '  ', '结尾 ', 'a  b', '\n开头换行', ' 1 2', '', '\t制表']

@pytest.fixture(scope='module')
def folder(tmp_path_factory):
    "The demo tokenizer, saved as the demo model saves it, with SentencePiece's own model kept beside it."
    d = tmp_path_factory.mktemp('tok')
    train_demo_tokenizer(d, keep_sp_model=True).save_pretrained(d)
    return d

@pytest.fixture(scope='module')
def sp(folder): return spm.SentencePieceProcessor(model_file=str(folder/'tokenizer.model'))

def test_edge_cases_and_shipped_texts(folder, sp):
    "Every id equal to SentencePiece's, leading spaces included, and every text decodes back to itself."
    tok = load_tokenizer(str(folder))
    pairs, _ = load_pairs('pkg:sample_instructions.json', 'alpaca')
    texts = [*ALPACA_PROMPT_DICT.values(), *(p[k] for p in pairs for k in ('source', 'target')),
             *(q['translation'] for q in read_json(ASSETS/'sample_questions.json')), *EDGES]
    assert [t for t in texts if tok(t, add_special_tokens=False).input_ids != sp.encode(t)] == []
    assert [tok.decode(tok(t, add_special_tokens=False).input_ids) for t in EDGES] == EDGES

def test_transformers_alone_differs_on_a_leading_space(folder, sp):
    "What `sentencepiece_spaces` mends: transformers 5's LLaMA tokenizer drops SentencePiece's extra marker."
    plain = AutoTokenizer.from_pretrained(str(folder))
    assert plain(' 空格', add_special_tokens=False).input_ids != sp.encode(' 空格')
    assert plain('空格', add_special_tokens=False).input_ids == sp.encode('空格')

def test_reference_rows_train_on_upstreams_ids(folder, sp, tmp_path):
    "Chinese-Vicuna's sample rows (one response starts with a newline): training's ids are upstream's, row for row."
    rows = [l for l in reference('chinese-vicuna', 'instruct_sample.jsonl').read_text(encoding='utf-8').splitlines() if l.strip()]
    (tmp_path/'rows.jsonl').write_text('\n'.join(rows) + '\n', encoding='utf-8')
    pairs, _ = load_pairs(str(tmp_path/'rows.jsonl'), 'alpaca')
    assert len(pairs) == len(rows) and any(p['target'][:1] == '\n' for p in pairs)
    tok = load_tokenizer(str(folder))
    for p in pairs:
        ex = encode_pair(p, tok, 10**6, 10**6)
        assert ex['input_ids'] == [1] + sp.encode(p['source']) + sp.encode(p['target']) + [2]
