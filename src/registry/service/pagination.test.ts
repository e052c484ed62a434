import { paginate } from './pagination.ts';

const tags = ['a', 'b', 'c', 'd'];

describe('paginate', () => {
  it('returns everything without n', () => {
    expect(paginate(tags, {})).toEqual({ items: tags, next: undefined });
  });
  it('cuts at n and names the next start', () => {
    expect(paginate(tags, { n: 2 })).toEqual({ items: ['a', 'b'], next: 'b' });
    expect(paginate(tags, { n: 2, last: 'b' })).toEqual({ items: ['c', 'd'], next: undefined });
  });
  it('treats n=0 as an empty page with no next', () => {
    expect(paginate(tags, { n: 0 })).toEqual({ items: [], next: undefined });
  });
  it('starts after a last that is not in the list', () => {
    expect(paginate(tags, { last: 'bb' })).toEqual({ items: ['c', 'd'], next: undefined });
    expect(paginate(tags, { last: 'z' })).toEqual({ items: [], next: undefined });
  });
});
