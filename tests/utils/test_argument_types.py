import argparse

import pytest

from acmix_mm.utils.argument_types import non_negative_int, positive_int


@pytest.mark.parametrize('function, minimum', [(positive_int, 1), (non_negative_int, 0)])
def test_integers_from_the_minimum_up_are_returned(function, minimum):
    for value in (minimum, minimum + 1, 10**6):
        assert function(str(value)) == value


@pytest.mark.parametrize('function, text, message', [
    (positive_int, '0', 'must be a positive integer, got 0'),
    (positive_int, '-3', 'must be a positive integer, got -3'),
    (positive_int, 'two', "must be a positive integer, got 'two'"),
    (positive_int, '1.5', "must be a positive integer, got '1.5'"),
    (non_negative_int, '-1', 'must be a non-negative integer, got -1'),
    (non_negative_int, '', "must be a non-negative integer, got ''"),
])
def test_other_values_are_refused_with_the_accepted_values(function, text, message):
    with pytest.raises(argparse.ArgumentTypeError, match=f'^{message}$'):
        function(text)


def test_argparse_names_the_argument(capsys):
    parser = argparse.ArgumentParser()
    parser.add_argument('--repeat', type=positive_int)
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(['--repeat', '0'])
    assert exit_info.value.code == 2
    assert 'argument --repeat: must be a positive integer, got 0' in capsys.readouterr().err
