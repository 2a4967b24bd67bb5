-- How many allowance months counted from p_anchor begin within [p_start, p_end): what a billing
-- period pays for (twelve in a year, one in a month; one or none in a week). Calendar months when
-- p_anchor is NULL.
CREATE OR REPLACE FUNCTION meter_months_beginning(p_anchor timestamptz, p_start timestamptz, p_end timestamptz)
RETURNS integer LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v_month record := meter_allowance_month(p_anchor, p_start);
    v_months integer := 0;
BEGIN
    IF v_month.month_start < p_start THEN
        v_month := meter_allowance_month(p_anchor, v_month.month_end);
    END IF;
    WHILE v_month.month_start < p_end AND v_months < 24 LOOP
        v_months := v_months + 1;
        v_month := meter_allowance_month(p_anchor, v_month.month_end);
    END LOOP;
    RETURN v_months;
END;
$$;
