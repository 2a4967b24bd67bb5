-- What a call costs in balance tokens: ceil(input x input weight + output x output weight), the
-- weights in millionths. Reserve prices its worst case with it, Commit the usage. Installed by
-- migration 0014.
CREATE OR REPLACE FUNCTION meter_weighted_tokens(
    p_input bigint, p_output bigint, p_input_weight bigint, p_output_weight bigint
) RETURNS bigint LANGUAGE sql IMMUTABLE AS $$
    SELECT (p_input * p_input_weight + p_output * p_output_weight + 999999) / 1000000
$$;
