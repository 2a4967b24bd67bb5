-- What a call costs in micro-USD: ceil(input x input price + output x output price), the prices in
-- micro-USD per million tokens. Installed by migration 0014.
CREATE OR REPLACE FUNCTION meter_cost_micros(
    p_input bigint, p_output bigint, p_input_price bigint, p_output_price bigint
) RETURNS bigint LANGUAGE sql IMMUTABLE AS $$
    SELECT (p_input * p_input_price + p_output * p_output_price + 999999) / 1000000
$$;
