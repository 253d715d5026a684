import json

import pytest

from rerank_export.cli import main
from rerank_export.contract import (
    DEFAULT_INSTRUCTION,
    PREFIX,
    SUFFIX,
    Contract,
    format_body,
    pad_left,
)
from rerank_export.errors import ContractError

from ..conftest import QWEN_TOKENIZER

pytestmark = pytest.mark.needs_fixtures

# From ../shared/fixtures/qwen3-reranker-0.6b/SOURCE.md, produced there by the upstream tokenizer.
SOURCE_MD_IDS = [151644, 8948, 198, 60256, 3425, 279, 11789, 20027, 279, 8502, 3118, 389, 279, 11361, 323, 279,
                 758, 1235, 3897, 13, 7036, 429, 279, 4226, 646, 1172, 387, 330, 9693, 1, 476, 330, 2152, 3263,
                 151645, 198, 151644, 872, 198, 27, 641, 1235, 26818, 16246, 264, 3482, 2711, 3239, 11, 17179,
                 9760, 46769, 429, 4226, 279, 3239, 198, 27, 2859, 26818, 3555, 374, 279, 6722, 315, 5616, 5267,
                 75692, 26818, 576, 6722, 315, 5616, 374, 26549, 13, 151645, 198, 151644, 77091, 198, 151667, 271,
                 151668, 271]
QUERY, DOC = "What is the capital of China?", "The capital of China is Beijing."


def test_full_prompt_matches_the_85_reference_ids(qwen_tokenizer):
    encoded = Contract(qwen_tokenizer).encode(QUERY, DOC)
    assert encoded.input_ids == SOURCE_MD_IDS
    assert not encoded.truncated


def test_yes_no_ids_come_from_the_tokenizer(qwen_tokenizer):
    contract = Contract(qwen_tokenizer)
    assert (contract.yes_id, contract.no_id) == (9693, 2152)  # SOURCE.md's values, looked up, not typed in code


def test_template_text_is_the_model_cards(qwen_tokenizer):
    text = qwen_tokenizer.decode(Contract(qwen_tokenizer).encode(QUERY, DOC).input_ids)
    assert text == PREFIX + f"<Instruct>: {DEFAULT_INSTRUCTION}\n<Query>: {QUERY}\n<Document>: {DOC}" + SUFFIX
    assert SUFFIX.endswith("<think>\n\n</think>\n\n")


def test_truncation_shortens_only_the_document(qwen_tokenizer):
    contract = Contract(qwen_tokenizer, max_length=120)
    encoded = contract.encode(QUERY, "Beijing is big. " * 200, "Find the answer")
    assert encoded.truncated and len(encoded.input_ids) == 120
    assert encoded.input_ids[: len(contract.prefix_ids)] == contract.prefix_ids
    assert encoded.input_ids[-len(contract.suffix_ids):] == contract.suffix_ids
    text = qwen_tokenizer.decode(encoded.input_ids)
    assert "<Instruct>: Find the answer\n<Query>: " + QUERY + "\n<Document>: Beijing is big." in text


def _decoded_cut(tokenizer, document: str, n: int) -> str:
    """The document cut to its first n tokens as text: the decode-and-encode-again path ids now replace."""
    return tokenizer.decode(tokenizer(document, add_special_tokens=False)["input_ids"][:n])


@pytest.mark.parametrize("document", [DOC, "The city is big. " * 40, "2024 was a year in Beijing."])
def test_a_document_cut_on_its_ids_is_the_decoded_cut_encoded_again(qwen_tokenizer, document):
    contract = Contract(qwen_tokenizer, max_length=120)
    for n in (1, 3, 5):
        cut = contract.encode(QUERY, document, "Find the answer", document_tokens=n)
        again = contract.encode(QUERY, _decoded_cut(qwen_tokenizer, document, n), "Find the answer")
        assert cut.input_ids == again.input_ids and cut.truncated
    assert contract.encode(QUERY, document, document_tokens=10_000) == contract.encode(QUERY, document)


def test_a_document_keeps_its_tokens_as_the_pair_holds_them(qwen_tokenizer):
    """The cap counts the tokens the pair holds: 'Supporting' is one token after the template's space, two
    ('Support', 'ing') alone, so decoding the first token alone and encoding again would keep 'Support'."""
    contract = Contract(qwen_tokenizer)
    document = "Supporting characters of the film"
    full, cut = contract.encode(QUERY, document), contract.encode(QUERY, document, document_tokens=1)
    # An empty document's space is the pair's last token before the suffix; ' Supporting' takes its place.
    kept = len(contract.encode(QUERY, "").input_ids) - len(contract.suffix_ids)
    assert cut.input_ids == full.input_ids[:kept] + contract.suffix_ids and cut.truncated
    assert qwen_tokenizer.decode(cut.input_ids[kept - 1]) == " Supporting"
    assert cut.input_ids != contract.encode(QUERY, _decoded_cut(qwen_tokenizer, document, 1)).input_ids
    with pytest.raises(ContractError, match="at least one token"):
        contract.encode(QUERY, document, document_tokens=0)


def test_query_that_fills_the_budget_is_an_error(qwen_tokenizer):
    with pytest.raises(ContractError, match="shorten the query or raise --max-length"):
        Contract(qwen_tokenizer, max_length=60).encode("word " * 100, DOC)


def test_empty_query_is_an_error(qwen_tokenizer):
    with pytest.raises(ContractError, match="query is empty"):
        Contract(qwen_tokenizer).encode("   ", DOC)


def test_pad_left_puts_real_tokens_last():
    ids, mask = pad_left([[1, 2, 3], [4]], pad_id=0)
    assert ids == [[1, 2, 3], [0, 0, 4]] and mask == [[1, 1, 1], [0, 0, 1]]


def test_p_yes_is_a_stable_sigmoid():
    from rerank_export.scoring import sigmoid

    assert sigmoid(0.0) == 0.5
    assert sigmoid(-1000.0) == 0.0 and sigmoid(1000.0) == 1.0
    assert format_body("q", "d") == f"<Instruct>: {DEFAULT_INSTRUCTION}\n<Query>: q\n<Document>: d"


def test_prompt_command_prints_ids_as_json(capsys):
    code = main(["prompt", "--tokenizer", str(QWEN_TOKENIZER), "--query", QUERY, "--document", DOC, "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["input_ids"] == SOURCE_MD_IDS and out["num_tokens"] == 85


def test_prompt_command_rejects_a_too_small_max_length(capsys):
    code = main(["prompt", "--tokenizer", str(QWEN_TOKENIZER), "--query", QUERY, "--document", DOC,
                 "--max-length", "40"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and "max length 40" in err


def test_score_template_renders_the_contract_prompt():
    """vLLM and transformers render chat templates with Jinja (trim_blocks, lstrip_blocks)."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    from rerank_export.contract import PREFIX, SUFFIX, format_body, score_template_path

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    template = env.from_string(score_template_path().read_text())
    messages = [{"role": "query", "content": "Q?"}, {"role": "document", "content": "D.\\n"}]
    assert template.render(messages=messages) == PREFIX + format_body("Q?", "D.\\n") + SUFFIX
    messages.insert(0, {"role": "system", "content": "Find code"})
    assert template.render(messages=messages) == PREFIX + format_body("Q?", "D.\\n", "Find code") + SUFFIX
    # vLLM hands a request's `instruction` to the template as a variable; it wins over a system message
    assert template.render(messages=messages, instruction="Find tests") == \
        PREFIX + format_body("Q?", "D.\\n", "Find tests") + SUFFIX
    assert template.render(messages=messages[1:], instruction="") == PREFIX + format_body("Q?", "D.\\n") + SUFFIX
